"""Inference backends behind one interface (:class:`Backend`); pick one with :func:`load_backend`.

Backend modules are imported lazily so the default ONNX Runtime path never imports torch, and the
optional TensorRT path (``engines.trt_backend``) is only touched when asked for. ``torch-cuda`` is
the CUDA-graph PyTorch fallback (:mod:`norface_rt.backends.cuda_backend`): on a machine without CUDA
it fails to load with the reason, like ``tensorrt`` without TensorRT.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

from norface_rt.backends.base import (
    Backend,
    ModelOutput,
    denormalize,
    preprocess,
    validate_crops,
)

BACKEND_NAMES: tuple[str, ...] = ("onnxruntime", "torch", "tensorrt", "torch-cuda")

TENSORRT_HINT = (
    "TensorRT is optional and not installed. Install it from NVIDIA's package index: "
    "pip install 'norface-rt[tensorrt]' --extra-index-url https://pypi.nvidia.com "
    "(needs an NVIDIA GPU and driver), or use name='onnxruntime'."
)


def load_backend(model_dir: str | os.PathLike[str], name: str = "onnxruntime", **kw: Any) -> Backend:
    """Open a model set with the named backend; ``kw`` goes to the backend's constructor
    (onnxruntime: providers, intra_op_threads; torch: device, fp16, num_threads; torch-cuda:
    device, fp16, buckets, use_graphs, num_threads)."""
    if name == "onnxruntime":
        from norface_rt.backends.onnx_backend import OrtBackend

        return OrtBackend(model_dir, **kw)
    if name == "torch":
        from norface_rt.backends.torch_backend import TorchBackend

        return TorchBackend(model_dir, **kw)
    if name == "torch-cuda":
        from norface_rt.backends.cuda_backend import CudaGraphBackend

        return CudaGraphBackend(model_dir, **kw)
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            raise RuntimeError(TENSORRT_HINT)
        try:
            mod = importlib.import_module("engines.trt_backend")
        except ImportError as e:
            raise RuntimeError(f"TensorRT backend module engines.trt_backend could not be imported: "
                               f"{e}. {TENSORRT_HINT}") from e
        cls = getattr(mod, "TrtBackend", None)
        if cls is None:
            raise RuntimeError("engines.trt_backend defines no TrtBackend class (expected "
                               "TrtBackend(model_dir, **kw) -> Backend)")
        backend: Backend = cls(model_dir, **kw)
        return backend
    raise ValueError(f"name must be one of {list(BACKEND_NAMES)}, got {name!r}")


__all__ = ["BACKEND_NAMES", "Backend", "ModelOutput", "denormalize", "load_backend", "preprocess",
           "validate_crops"]
