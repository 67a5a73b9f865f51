"""Inference backends behind one interface (:class:`Backend`); pick one with :func:`load_backend`.

Backend modules are imported lazily so the default ONNX Runtime path never imports torch. The
others need an extra (``torch`` for ``torch`` and ``torch-cuda``, ``tensorrt`` for ``tensorrt``);
without it, :func:`load_backend` fails with the command that installs it. ``torch-cuda`` is the
CUDA-graph PyTorch fallback (:mod:`norface_rt.backends.cuda_backend`); ``tensorrt`` runs engines
built by ``norface-rt build-engines`` (:mod:`norface_rt.backends.tensorrt`); ``triton`` sends the
crops to an NVIDIA Triton Inference Server (:mod:`norface_rt.backends.triton_backend`, extra
``triton``): its ``model_dir`` is a ``grpc://`` URL instead of a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from norface_rt.backends.base import Backend, ModelOutput
from norface_rt.extras import MissingExtra, require
from norface_rt.model_set import verify_model_set
from norface_rt.preprocess import denormalize, preprocess, validate_crops

BACKEND_NAMES: tuple[str, ...] = ("onnxruntime", "torch", "tensorrt", "torch-cuda", "triton")
# Backends that run the model elsewhere (a server), not on a local model set: `norface-rt bench`
# measures local ones (benchmarks/test_triton_bench.py measures Triton).
REMOTE_BACKENDS: tuple[str, ...] = ("triton",)


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (a missing extra, no GPU); the message says what to install."""


def load_backend(model_dir: str | os.PathLike[str], name: str = "onnxruntime", **kw: Any) -> Backend:
    """Open a model set with the named backend; ``kw`` goes to the backend's constructor
    (onnxruntime: providers, intra_op_threads; torch: device, fp16, num_threads; torch-cuda:
    device, fp16, buckets, use_graphs, num_threads; tensorrt: device, max_batch, engine_dir and
    the build options its engines were built with; triton: ``model_dir`` is the server's
    grpc:// URL, and model_name, expected, shared_memory, timeout_s, retry_s, connect_s).

    A model-set directory is first checked against its manifest
    (:func:`~norface_rt.model_set.verify_model_set`): damaged or altered files are refused with
    :class:`~norface_rt.model_set.ModelSetError` before any graph or weight is read (a Triton URL
    is not a directory: the server checked the set when its repository was written)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"name must be one of {list(BACKEND_NAMES)}, got {name!r}")
    if Path(model_dir).is_dir():
        verify_model_set(model_dir)
    if name == "onnxruntime":
        from norface_rt.backends.onnx_backend import OrtBackend

        return OrtBackend(model_dir, **kw)
    try:
        if name == "torch":
            require("torch", "the torch backend")
            from norface_rt.backends.torch_backend import TorchBackend

            return TorchBackend(model_dir, **kw)
        if name == "torch-cuda":
            require("torch", "the torch-cuda backend")
            from norface_rt.backends.cuda_backend import CudaGraphBackend

            return CudaGraphBackend(model_dir, **kw)
        if name == "triton":
            require("triton", "--backend triton")
            from norface_rt.backends.triton_backend import TritonBackend

            return TritonBackend(str(model_dir), **kw)
        from norface_rt.backends.tensorrt import TrtBackend

        return TrtBackend(model_dir, **kw)
    except (MissingExtra, ImportError) as e:  # TensorRTUnavailable is an ImportError too
        raise BackendUnavailable(str(e)) from e


__all__ = ["BACKEND_NAMES", "REMOTE_BACKENDS", "Backend", "BackendUnavailable", "ModelOutput", "denormalize",
           "load_backend", "preprocess", "validate_crops"]
