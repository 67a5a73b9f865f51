"""The numeric reference every accelerated path is judged against: PyTorch fp32 on the CPU.

``norface-rt bench`` puts each backend's error next to its speed, and the TensorRT engine builder
(:mod:`norface_rt.engines`) gates its FP16 engines on it; both use these functions on the same
seeded inputs so their figures are comparable. Needs the ``torch`` extra for
:func:`reference_outputs`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.extras import require
from norface_rt.model_set import PROBABILITY_NAMES
from norface_rt.preprocess import preprocess, validate_geometry

OUTPUT_KEYS: tuple[str, str, str] = PROBABILITY_NAMES


def make_crops(batch: int, img_size: int, seed: int) -> np.ndarray:
    """Seeded uniform-noise crops (batch, S, S, 3) uint8; regenerated identically in every
    process (speed does not depend on pixel content, and a comparison needs only equal inputs)."""
    rng = np.random.default_rng([seed, batch])
    return rng.integers(0, 256, size=(batch, img_size, img_size, 3), dtype=np.uint8)


def make_geometry(batch: int, cfg: ModelConfig, seed: int) -> np.ndarray | None:
    """Seeded geometry input (batch, G) float32 for models that consume one (None otherwise):
    blendshape-like scores in [0, 1], skewed towards 0 as real ones are."""
    if not cfg.geometry_dim:
        return None
    rng = np.random.default_rng([seed, batch, 1])
    return (rng.random((batch, cfg.geometry_dim)) ** 3).astype(np.float32)


def reference_outputs(model_dir: str | os.PathLike[str], crops_by_batch: dict[int, np.ndarray],
                      geometry_by_batch: dict[int, np.ndarray | None] | None = None
                      ) -> dict[int, dict[str, np.ndarray]]:
    """PyTorch fp32 (CPU) outputs of the model set for each input batch: the numeric ground truth.
    ``geometry_by_batch`` feeds models with a geometry input (:func:`make_geometry`)."""
    require("torch", "the PyTorch fp32 reference")
    import torch

    from norface_rt.weights import load_torch_model

    model = load_torch_model(model_dir, device="cpu")
    out: dict[int, dict[str, np.ndarray]] = {}
    with torch.inference_mode():
        for b, crops in crops_by_batch.items():
            face = torch.from_numpy(preprocess(crops, model.cfg))
            g = (geometry_by_batch or {}).get(b)
            geo = validate_geometry(g, model.cfg, len(crops))
            normalized = model.normalize(face)
            probs = model.classify(normalized, face, None if geo is None else torch.from_numpy(geo))
            out[b] = {k: v.float().numpy() for k, v in zip(OUTPUT_KEYS, probs)}
    return out


def max_abs_errors(result: Any, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |result - reference| per output (``result`` is a ModelOutput)."""
    return {k: float(np.max(np.abs(np.asarray(getattr(result, k), np.float64)
                                   - np.asarray(ref[k], np.float64))))
            for k in OUTPUT_KEYS}
