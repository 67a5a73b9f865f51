"""Inference backends behind one interface (:class:`Backend`): :func:`load_backend` opens a local
model set, :func:`connect_backend` a model served elsewhere.

Every name and its facts (module, class, extra, local or remote, device, options) are rows of
:data:`~norface_rt.backends.registry.BACKENDS`. Backend modules are imported lazily so the default
ONNX Runtime path never imports torch. The others need an extra (``torch`` for ``torch`` and
``torch-cuda``, ``tensorrt`` for ``tensorrt``, ``triton`` for ``triton``); without it, loading
fails with the command that installs it. ``torch-cuda`` is the CUDA-graph PyTorch fallback
(:mod:`norface_rt.backends.cuda_backend`); ``tensorrt`` runs engines built by ``norface-rt
build-engines`` (:mod:`norface_rt.backends.tensorrt`); ``triton`` sends the crops to an NVIDIA
Triton Inference Server (:mod:`norface_rt.backends.triton_backend`).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from norface_rt.backends.base import Backend, ModelOutput
from norface_rt.backends.registry import (
    BACKEND_NAMES,
    BACKENDS,
    DEFAULT_BACKEND,
    LOCAL_BACKENDS,
    REMOTE_BACKENDS,
    BackendSpec,
    backend_spec,
)
from norface_rt.extras import MissingExtra, require
from norface_rt.model_set import verify_model_set
from norface_rt.preprocess import denormalize, preprocess, validate_crops


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (a missing extra, no GPU); the message says what to install."""


def _construct(spec: BackendSpec, target: str | os.PathLike[str], kw: dict[str, Any]) -> Backend:
    """Import the backend's class (checking its extra first) and build it on ``target``."""
    try:
        if spec.check_extra and spec.extra is not None:
            require(spec.extra, spec.purpose)
        cls = getattr(importlib.import_module(spec.module), spec.cls)
    except (MissingExtra, ImportError) as e:  # TensorRTUnavailable is an ImportError too
        raise BackendUnavailable(str(e)) from e
    try:
        backend: Backend = cls(target, **kw)
    except (MissingExtra, ImportError) as e:  # an import inside the constructor (TensorRT)
        raise BackendUnavailable(str(e)) from e
    return backend


def load_backend(model_dir: str | os.PathLike[str], name: str = DEFAULT_BACKEND,
                 **kw: Any) -> Backend:
    """Open a local model set with the named backend; ``kw`` goes to the backend's constructor
    (onnxruntime: providers, intra_op_threads; torch: device, fp16, num_threads; torch-cuda:
    device, fp16, buckets, use_graphs, num_threads; tensorrt: device, max_batch, engine_dir and
    the build options its engines were built with).

    The directory is first checked against its manifest
    (:func:`~norface_rt.model_set.verify_model_set`): damaged or altered files are refused with
    :class:`~norface_rt.model_set.ModelSetError` before any graph or weight is read. A backend
    that runs on a server is opened with :func:`connect_backend` instead."""
    spec = backend_spec(name)
    if spec.remote:
        raise ValueError(f"name: {name!r} runs the model on a server; open it with "
                         f"connect_backend(url, {name!r}), not from a model folder")
    if Path(model_dir).is_dir():
        verify_model_set(model_dir)
    return _construct(spec, model_dir, kw)


def connect_backend(url: str, name: str = "triton", **kw: Any) -> Backend:
    """Connect to a model served at ``url`` (triton: ``grpc://HOST:PORT``; ``kw``: model_name,
    expected, shared_memory, timeout_s, retry_s, connect_s). The server checked its model set
    when its repository was written; ``expected`` (a ModelConfig) makes sure it is the one the
    caller means."""
    spec = backend_spec(name)
    if not spec.remote:
        raise ValueError(f"name: {name!r} runs a local model set; open it with "
                         f"load_backend(model_dir, {name!r}), not from a URL")
    return _construct(spec, str(url), kw)


__all__ = ["BACKENDS", "BACKEND_NAMES", "DEFAULT_BACKEND", "LOCAL_BACKENDS", "REMOTE_BACKENDS", "Backend",
           "BackendSpec", "BackendUnavailable", "ModelOutput", "backend_spec", "connect_backend",
           "denormalize", "load_backend", "preprocess", "validate_crops"]
