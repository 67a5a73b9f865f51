"""Running sources through faces, a backend and sinks.

* :mod:`norface_rt.pipeline.runner` -- :class:`Pipeline`, the threads, queues and typed hand-offs;
* :mod:`norface_rt.pipeline.options` -- :class:`PipelineOptions` and :class:`SinkOptions`;
* :mod:`norface_rt.pipeline.factory` -- the one factory that builds backends, face stages, sources
  and sinks for every entry point.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): the CLI builds every command's parser from the options at
# start-up, and that must not import the runner's stages (PyAV, OpenCV, ...).
_LAZY = {
    "backend_options": "norface_rt.pipeline.factory",
    "build_face_stage": "norface_rt.pipeline.factory",
    "create_pipeline": "norface_rt.pipeline.factory",
    "make_sinks": "norface_rt.pipeline.factory",
    "open_backend": "norface_rt.pipeline.factory",
    "PipelineOptions": "norface_rt.pipeline.options",
    "SinkOptions": "norface_rt.pipeline.options",
    "Pipeline": "norface_rt.pipeline.runner",
    "StageError": "norface_rt.pipeline.runner",
}

__all__ = ["Pipeline", "PipelineOptions", "SinkOptions", "StageError", "backend_options",
           "build_face_stage", "create_pipeline", "make_sinks", "open_backend"]

if TYPE_CHECKING:
    from norface_rt.pipeline.factory import (
        backend_options,
        build_face_stage,
        create_pipeline,
        make_sinks,
        open_backend,
    )
    from norface_rt.pipeline.options import PipelineOptions, SinkOptions
    from norface_rt.pipeline.runner import Pipeline, StageError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt.pipeline' has no attribute {name!r}")
