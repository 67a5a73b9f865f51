"""The TensorRT engine builder: compile a model set's ONNX graphs into FP16 engines, cache them, and
gate their accuracy (``norface-rt build-engines``).

* :mod:`norface_rt.engines.build` -- :func:`~norface_rt.engines.build.build_engines`,
  :func:`~norface_rt.engines.build.check_accuracy` and the tolerances;
* :mod:`norface_rt.engines.precision` -- which layers stay FP32 in an FP16 engine; pure Python.

The builder depends on the runtime, never the reverse: running engines is
:mod:`norface_rt.backends.tensorrt`, the cache format :mod:`norface_rt.backends.trt_cache`, and
nothing in the package but the CLI imports this one. TensorRT, torch and CUDA are imported only
when an engine is built, so importing this package works on machines without them (needs the
``tensorrt`` extra to build; see docs/gpu.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_engines": "norface_rt.engines.build",
    "check_accuracy": "norface_rt.engines.build",
    "AccuracyReport": "norface_rt.engines.build",
    "TOLERANCES": "norface_rt.engines.build",
}


def __getattr__(name: str) -> Any:
    """Resolve the public names on first use, so ``import norface_rt.engines`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'norface_rt.engines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
