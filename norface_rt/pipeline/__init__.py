"""Running sources through faces, a backend and sinks.

* :mod:`norface_rt.pipeline.runner` -- :class:`Pipeline`, the threads, queues and typed hand-offs;
* :mod:`norface_rt.pipeline.options` -- :class:`PipelineOptions` and :class:`SinkOptions`;
* :mod:`norface_rt.pipeline.factory` -- the one factory that builds backends, face stages, sources
  and sinks for every entry point.
"""

from __future__ import annotations

from norface_rt.pipeline.factory import (
    backend_options,
    build_face_stage,
    create_pipeline,
    make_sinks,
    open_backend,
)
from norface_rt.pipeline.options import PipelineOptions, SinkOptions
from norface_rt.pipeline.runner import Pipeline, StageError

__all__ = ["Pipeline", "PipelineOptions", "SinkOptions", "StageError", "backend_options",
           "build_face_stage", "create_pipeline", "make_sinks", "open_backend"]
