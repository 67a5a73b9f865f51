"""What both ports share: PyTorch, imported lazily with an install hint, and TensorFlow's
``same`` padding (both teachers were trained in TensorFlow)."""

from __future__ import annotations

from typing import Any

from train.teachers.base import TeacherUnavailable


def torch_module() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise TeacherUnavailable("the teachers' ports run in PyTorch: pip install "
                                 "'norface-rt[teachers]'") from exc
    return torch


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding of one axis: (before, after), the extra pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Any, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0) -> Any:
    """(N, C, H, W) tensor padded as TensorFlow pads a ``same`` convolution or pooling."""
    top, bottom = same_padding(int(x.shape[2]), int(kernel[0]), int(stride[0]))
    left, right = same_padding(int(x.shape[3]), int(kernel[1]), int(stride[1]))
    if top or bottom or left or right:
        x = torch_module().nn.functional.pad(x, (left, right, top, bottom), value=value)
    return x
