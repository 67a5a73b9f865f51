"""Training-time geometry input: what the runtime would read on a real face, made from renders.

MediaPipe reads renders differently from real faces: their resting faces carry other constant
offsets (no brow lowering, wide eyes), and their neutral faces vary far less between people than
real ones do. A classifier trained on raw render readings calls every real neutral face an
emotion. So each rendered expression is moved onto a real person's neutral face: the reading of
the render minus the reading of the same rendered person without the expression (the
displacement the expression causes, identity and render offsets removed), plus the reading of a
real neutral face drawn from the pool of permissive real photos (``train.data.real_faces``).
That is the reading of "this expression on that real person", which is what a still photo shows;
with a per-track baseline at run time the real person's offset is moved to the pool mean, a case
the same construction covers. Real photos in the training data keep their own reading.

Evaluation uses the pool mean instead of a random face, so held-out scores are deterministic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, neutral_distance


class GeometryPool:
    """Blendshapes of real neutral faces (``geometry_pool.npz``: ``neutral`` (N, G), ``names``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"geometry pool not found: {p} (python -m train prepare-real)")
        with np.load(p, allow_pickle=False) as z:
            self.neutral = np.asarray(z["neutral"], np.float32)
            names = tuple(str(n) for n in z["names"])
        if names != MEDIAPIPE_BLENDSHAPES:
            raise ValueError(f"{p}: blendshape names differ from MEDIAPIPE_BLENDSHAPES")
        if self.neutral.ndim != 2 or self.neutral.shape[1] != len(names) or len(self.neutral) < 2:
            raise ValueError(f"{p}: neutral must be (N >= 2, {len(names)}), got {self.neutral.shape}")
        self.names = names
        self.path = p

    @property
    def reference(self) -> np.ndarray:
        return self.neutral.mean(axis=0)

    @property
    def spread(self) -> np.ndarray:
        # a floor keeps standardisation finite for scores MediaPipe never moves on neutral faces
        return np.maximum(self.neutral.std(axis=0), 0.01)

    @property
    def neutral_radius(self) -> float:
        """The distance from the pool's mean that 99 % of its own neutral faces stay within (the
        per-track baseline's gate for neutral evidence, norface_rt.faces.geometry)."""
        d = neutral_distance(self.neutral, self.reference, self.spread)
        return float(np.quantile(d, 0.99))

    def model_fields(self) -> dict[str, Any]:
        """The ModelConfig fields this pool calibrates."""
        return {"geometry_inputs": ("blendshapes",), "blendshape_names": self.names,
                "geometry_reference": tuple(float(v) for v in self.reference),
                "geometry_spread": tuple(float(v) for v in self.spread),
                "geometry_neutral_radius": math.ceil(self.neutral_radius * 1e4) / 1e4}


def _moved(batch: Mapping[str, Any], base: torch.Tensor,
           gain: torch.Tensor | None = None) -> torch.Tensor:
    """Renders (rows with ``mp_neutral``) moved onto ``base`` (B, G), their displacement scaled by
    ``gain`` (B, 1) when given; real rows as read."""
    if "mp_blendshapes" not in batch:
        raise ValueError("batch has no mp_blendshapes: generate shards with --landmarker "
                         "(python -m train.synth generate) or use python -m train prepare-real")
    mp = batch["mp_blendshapes"].float()
    out = mp.clone()
    if "mp_neutral" in batch:
        rows = batch["has_mp_neutral"] if "has_mp_neutral" in batch \
            else torch.ones(len(mp), dtype=torch.bool)
        shift = mp - batch["mp_neutral"].float()
        if gain is not None:
            shift = shift * gain
        out = torch.where(rows[:, None], shift + base, out)
    return out


def _finish(out: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(out).all():
        raise ValueError("geometry: non-finite values (a sample MediaPipe could not read; build the "
                         "dataset with require_geometry: true)")
    return out.clamp_(0.0, 1.0)


def geometry_batch(batch: Mapping[str, Any], pool: GeometryPool, *, random: bool,
                   generator: torch.Generator | None = None, noise: float = 0.0,
                   gain: tuple[float, float] | None = None) -> torch.Tensor:
    """(B, G) float32 geometry input for a collated batch (see module doc).

    Rows with ``mp_neutral`` (renders) are moved onto a pool face (random, or the pool mean
    when ``random`` is False); other rows (real photos) keep ``mp_blendshapes``. ``noise`` adds
    Gaussian noise of that many pool standard deviations, ``gain`` (low, high) scales each
    render's displacement by a uniform draw: how strongly MediaPipe responds to one expression
    differs between renders and real faces and between people (a real smile read stronger than a
    rendered one, raised brows weaker), so the same expression is shown at several response
    gains (training only).
    """
    n = len(batch["mp_blendshapes"]) if "mp_blendshapes" in batch else 0
    neutral_pool = torch.from_numpy(pool.neutral)
    if random:
        base = neutral_pool[torch.randint(len(neutral_pool), (n,), generator=generator)]
    else:
        base = torch.from_numpy(pool.reference).expand(n, -1)
    g = None
    if gain is not None:
        lo, hi = gain
        if not 0 < lo <= hi:
            raise ValueError(f"geometry gain must be (low, high) with 0 < low <= high, got {gain}")
        g = lo + (hi - lo) * torch.rand((n, 1), generator=generator)
    out = _moved(batch, base, g)
    if noise > 0:
        sd = torch.from_numpy(pool.spread)
        out = out + noise * sd * torch.randn(out.shape, generator=generator)
    return _finish(out)


def held_out_geometry(batch: Mapping[str, Any], reference: Sequence[float]) -> np.ndarray:
    """Deterministic geometry input for evaluation: renders moved onto ``reference`` (the pool's
    mean neutral face, ``ModelConfig.geometry_reference``), real photos as read."""
    ref = torch.tensor(np.asarray(reference, np.float32))
    n = len(batch["mp_blendshapes"]) if "mp_blendshapes" in batch else 0
    return _finish(_moved(batch, ref.expand(n, -1))).numpy()


def pool_model_fields(path: str | os.PathLike[str] | None,
                      model: Mapping[str, Any]) -> dict[str, Any]:
    """A config "model" section with the pool's calibration filled in when it asks for geometry."""
    d = dict(model)
    if not d.get("geometry_inputs"):
        return d
    if path is None:
        raise ValueError("model.geometry_inputs is set, so classifier.geometry_pool (the "
                         "geometry_pool.npz of python -m train prepare-real) is required")
    fields = GeometryPool(path).model_fields()
    for k, v in fields.items():
        d.setdefault(k, v)
    if tuple(d["geometry_inputs"]) != ("blendshapes",):
        raise ValueError(f"model.geometry_inputs: only ['blendshapes'] is supported, got "
                         f"{list(d['geometry_inputs'])}")
    return d


__all__: Sequence[str] = ("GeometryPool", "geometry_batch", "held_out_geometry", "pool_model_fields")
