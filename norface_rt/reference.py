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

from norface_rt.extras import require
from norface_rt.model_set import PROBABILITY_NAMES
from norface_rt.preprocess import preprocess

OUTPUT_KEYS: tuple[str, str, str] = PROBABILITY_NAMES


def make_crops(batch: int, img_size: int, seed: int) -> np.ndarray:
    """Seeded uniform-noise crops (batch, S, S, 3) uint8; regenerated identically in every
    process (speed does not depend on pixel content, and a comparison needs only equal inputs)."""
    rng = np.random.default_rng([seed, batch])
    return rng.integers(0, 256, size=(batch, img_size, img_size, 3), dtype=np.uint8)


def reference_outputs(model_dir: str | os.PathLike[str], crops_by_batch: dict[int, np.ndarray]
                      ) -> dict[int, dict[str, np.ndarray]]:
    """PyTorch fp32 (CPU) outputs of the model set for each input batch: the numeric ground truth."""
    require("torch", "the PyTorch fp32 reference")
    import torch

    from norface_rt.weights import load_torch_model

    model = load_torch_model(model_dir, device="cpu")
    out: dict[int, dict[str, np.ndarray]] = {}
    with torch.inference_mode():
        for b, crops in crops_by_batch.items():
            face = torch.from_numpy(preprocess(crops, model.cfg))
            normalized = model.normalize(face)
            probs = model.classify(normalized, face)
            out[b] = {k: v.float().numpy() for k, v in zip(OUTPUT_KEYS, probs)}
    return out


def max_abs_errors(result: Any, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |result - reference| per output (``result`` is a ModelOutput)."""
    return {k: float(np.max(np.abs(np.asarray(getattr(result, k), np.float64)
                                   - np.asarray(ref[k], np.float64))))
            for k in OUTPUT_KEYS}
