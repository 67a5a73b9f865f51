"""Helpers shared by the engine tests: can TensorRT run here, and if not, why."""

from __future__ import annotations

import importlib.util

SKIP_NO_TRT = "TensorRT not installed (needs an NVIDIA GPU; see docs/gpu.md)"


def tensorrt_importable() -> bool:
    """True when ``import tensorrt`` succeeds (a stub wheel without its libraries counts as
    absent)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from norface_rt.backends.tensorrt import tensorrt_available

    return tensorrt_available()


def gpu_skip_reason() -> str | None:
    """Why the TensorRT tests cannot run here, or None when they can."""
    if not tensorrt_importable():
        return SKIP_NO_TRT
    try:
        import torch
    except ImportError:
        return "torch not importable (the TensorRT backend uses torch.cuda)"
    if not torch.cuda.is_available():
        return (f"TensorRT is installed but torch {torch.__version__} sees no CUDA GPU "
                "(see docs/gpu.md)")
    return None
