"""Backend contract: aligned uint8 RGB crops in, AU / emotion arrays out.

Pre- and post-processing are not the backends' business: :mod:`norface_rt.preprocess` owns them,
so every backend and training see the exact same pixels. This module imports numpy only (no
torch), so the ONNX Runtime path stays light.

A batch's answer is a :class:`~norface_rt.types.ModelOutput` (a typed hand-off, defined with the
others in :mod:`norface_rt.types`). Stage timings: :attr:`ModelOutput.timings` reports, in
seconds for the whole batch, how long the network took. Backends that run the two halves
separately report :attr:`Stage.NORMALIZE` and :attr:`Stage.CLASSIFY`; a backend that runs one
combined graph reports :attr:`Stage.INFER` (never both forms). Pre/post-processing is not included.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.preprocess import denormalize, preprocess, validate_crops, validate_geometry
from norface_rt.types import ModelOutput, Stage, Timings

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Backend(ABC):
    """Runs the exported Norface inference graph. Subclasses implement :meth:`_forward`; one that
    can time normalization and classification apart also overrides :meth:`_forward_timed` (the
    default times the whole :meth:`_forward` call as ``infer``).

    ``aligns_on_device`` is True for a backend that can warp faces itself from a frame and the
    image->crop matrices (:meth:`infer_aligned_many`); the pipeline then skips the CPU warp.
    """

    config: ModelConfig
    name: ClassVar[str]
    aligns_on_device: ClassVar[bool] = False
    # Outages survived so far by a backend that talks to a server (Triton); None for local ones.
    reconnects: int | None = None

    @abstractmethod
    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        """x (N>=1, C, S, S) float32 [, geometry (N, G) float32 for models that consume it] ->
        (normalized NCHW float, au_prob, au_intensity, emotion_prob)."""

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        """:meth:`_forward` plus its stage timings in seconds (see :class:`ModelOutput`)."""
        t0 = time.perf_counter()
        outs = self._forward(x, geometry)
        return outs, {Stage.INFER: time.perf_counter() - t0}

    def infer(self, crops: np.ndarray, *, geometry: np.ndarray | None = None,
              want_normalized: bool = False) -> ModelOutput:
        """Analyse aligned crops (N, S, S, 3) uint8 RGB; N = 0 returns empty arrays without running.

        ``geometry`` (N, G) is required by (and only accepted for) models whose config declares
        geometry inputs (:func:`~norface_rt.preprocess.validate_geometry`)."""
        cfg = self.config
        validate_crops(crops, cfg)
        n, a, e = crops.shape[0], len(cfg.au_names), len(cfg.emotion_names)
        geo = validate_geometry(geometry, cfg, n)
        if n == 0:
            return ModelOutput.empty(cfg, want_normalized)
        (normalized, au_prob, au_int, emo), timings = self._forward_timed(preprocess(crops, cfg), geo)
        return ModelOutput(
            normalized=denormalize(normalized, cfg) if want_normalized else None,
            au_prob=np.asarray(au_prob, dtype=np.float32).reshape(n, a),
            au_intensity=np.asarray(au_int, dtype=np.float32).reshape(n, a),
            emotion_prob=np.asarray(emo, dtype=np.float32).reshape(n, e),
            timings=dict(timings),
        )

    def infer_aligned_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]], *,
                           geometry: np.ndarray | None = None,
                           want_normalized: bool = False) -> ModelOutput:
        """Analyse the faces of several frames given as (frame (H, W, 3) uint8 RGB, image->crop
        matrices (K, 2, 3)), ``geometry`` (sum of K, G) for models that consume it; only backends
        with ``aligns_on_device`` implement it."""
        raise NotImplementedError(f"backend {self.name!r} cannot align on its device "
                                  "(aligns_on_device is False)")

    def describe(self) -> dict[str, Any]:
        """What a report should say about this backend instance (``device`` at least; backends
        add their own settings)."""
        return {"device": None}

    def close(self) -> None:  # noqa: B027  (optional: only backends holding devices override it)
        """Release sessions / device memory; the default holds nothing that needs it."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.config.model_id!r})"
