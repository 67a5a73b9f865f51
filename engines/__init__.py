"""TensorRT engines for norface-rt: building, caching, accuracy gate, and the runtime backend.

* :mod:`engines.cache` -- the cache key (GPU, compute capability, TensorRT version, ONNX sha256,
  build options) and the on-disk cache directory; pure Python.
* :mod:`engines.precision` -- which layers stay FP32 in an FP16 engine; pure Python.
* :mod:`engines.build` -- :func:`~engines.build.build_engines`,
  :func:`~engines.build.check_accuracy` and the tolerances.
* :mod:`engines.trt_backend` -- :class:`~engines.trt_backend.TrtBackend`, what
  ``load_backend(model_dir, "tensorrt")`` returns.

TensorRT, torch and CUDA are imported only when an engine is built or a backend is created, so
importing this package (and :mod:`engines.cache`) works on machines without them. See
docs/gpu.md for installation and use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_engines": "engines.build",
    "check_accuracy": "engines.build",
    "find_engines": "engines.build",
    "EngineSet": "engines.build",
    "AccuracyReport": "engines.build",
    "TensorRTUnavailable": "engines.build",
    "tensorrt_available": "engines.build",
    "TrtBackend": "engines.trt_backend",
    "BuildOptions": "engines.cache",
    "CacheKeyInputs": "engines.cache",
    "cache_key": "engines.cache",
    "default_cache_root": "engines.cache",
}


def __getattr__(name: str) -> Any:
    """Resolve the public names on first use, so ``import engines`` stays light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engines' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
