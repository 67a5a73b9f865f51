"""Preprocessing: the one definition of how aligned uint8 RGB crops become network input.

Every path that feeds the network goes through here, so training and every backend see the
exact same numbers: ONNX Runtime / PyTorch / TensorRT (:func:`preprocess`), training
(``train.data.sample.images_to_tensor``) and on-device alignment
(:class:`norface_rt.backends.gpu_preprocess.TorchAligner`, which applies
:func:`input_affine` after warping). ``(x / 255 - mean) / std`` is folded once, in float64, into
one float32 scale and shift per channel; applying ``x * scale + shift`` is then the same float32
arithmetic on every device. :func:`denormalize` is the only way back to uint8.

Imports numpy only (no torch), so the ONNX Runtime path stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from norface_rt.config import ModelConfig


def input_affine(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 ``(scale, shift)`` with ``(x/255 - mean)/std == x * scale + shift``."""
    if len(mean) != len(std):
        raise ValueError(f"mean/std: expected the same number of channels, got {len(mean)}/{len(std)}")
    if any(not s > 0 for s in std):
        raise ValueError(f"std: expected values > 0, got {tuple(std)}")
    std64 = np.asarray(std, dtype=np.float64)
    scale = (1.0 / (255.0 * std64)).astype(np.float32)
    shift = (-np.asarray(mean, dtype=np.float64) / std64).astype(np.float32)
    return scale, shift


def normalize_pixels(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, S, S, C) uint8 -> (N, C, S, S) float32 ``x * scale + shift``, C-contiguous."""
    scale, shift = input_affine(mean, std)
    x = np.asarray(images).transpose(0, 3, 1, 2).astype(np.float32)
    x *= scale.reshape(1, -1, 1, 1)
    x += shift.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x)


def validate_crops(crops: np.ndarray, cfg: ModelConfig) -> None:
    """Reject anything but (N, S, S, C) uint8 with a message stating expected vs actual."""
    s, c = cfg.img_size, cfg.in_chans
    shape = getattr(crops, "shape", None)
    dtype = getattr(crops, "dtype", type(crops).__name__)
    if (not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4
            or crops.shape[1:] != (s, s, c)):
        got = f"{tuple(shape)} {dtype}" if shape is not None else f"{type(crops).__name__}"
        raise ValueError(f"crops: expected (N, {s}, {s}, {c}) uint8, got {got}")


def validate_geometry(geometry: np.ndarray | None, cfg: ModelConfig, n: int) -> np.ndarray | None:
    """The geometry input for ``n`` faces as C-contiguous float32 (N, G), or None for a model
    without one; the error says what the model expects and what came."""
    g = cfg.geometry_dim
    if g == 0:
        if geometry is not None:
            raise ValueError(f"geometry: model {cfg.model_id!r} has no geometry input "
                             "(config geometry_inputs=()), got an array")
        return None
    if geometry is None:
        raise ValueError(f"geometry: model {cfg.model_id!r} consumes {list(cfg.geometry_inputs)} "
                         f"({g} values per face) beside the crops, got none")
    a = np.asarray(geometry)
    if a.shape != (n, g) or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"geometry: expected ({n}, {g}) float, got {a.shape} {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError("geometry: expected finite values, got NaN or inf")
    return np.ascontiguousarray(a, dtype=np.float32)


def preprocess(crops: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Validated (N, S, S, C) uint8 RGB crops -> (N, C, S, S) float32 network input."""
    validate_crops(crops, cfg)
    return normalize_pixels(crops, cfg.mean, cfg.std)


def denormalize(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Inverse of :func:`preprocess` for network images: (N, C, S, S) float -> (N, S, S, C) uint8,
    clipped (the decoder output is linear and may leave the valid range)."""
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(1, -1, 1, 1)
    img = (np.asarray(x, dtype=np.float32) * std + mean) * 255.0
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
