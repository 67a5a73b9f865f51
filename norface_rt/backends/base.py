"""Backend contract: aligned uint8 RGB crops in, AU / emotion arrays out.

Pre- and post-processing live here, once, so every backend (ONNX Runtime, PyTorch, TensorRT) and
training see the exact same pixels: :func:`preprocess` is the only place that turns crops into the
network's normalised NCHW float input, :func:`denormalize` the only place that turns the normalized
face back into uint8. This module imports numpy only (no torch), so the ORT runtime path stays light.

Stage timings: :attr:`ModelOutput.timings` reports, in seconds for the whole batch, how long the
network took. Backends that run the two halves separately report ``"normalize"`` and
``"classify"``; a backend that runs one combined graph reports ``"infer"`` (never both forms).
Pre/post-processing (:func:`preprocess`, :func:`denormalize`) is not included.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from norface_rt.config import ModelConfig

# ONNX metadata_props keys written by norface_rt.export and read by every loader.
META_CONFIG = "norface_config"
META_MODEL_ID = "norface_model_id"
META_TRAINED = "norface_trained"

INPUT_NAME = "face"
OUTPUT_NAMES: tuple[str, str, str, str] = ("normalized", "au_prob", "au_intensity", "emotion_prob")

# The split graphs of a model set (written beside norface.onnx by norface_rt.export).
NORMALIZER_FILE = "normalizer.onnx"
CLASSIFIER_FILE = "classifier.onnx"
NORMALIZED_NAME = "normalized"
NORMALIZER_INPUTS: tuple[str] = (INPUT_NAME,)
NORMALIZER_OUTPUTS: tuple[str] = (NORMALIZED_NAME,)
CLASSIFIER_INPUTS: tuple[str, str] = (NORMALIZED_NAME, INPUT_NAME)
CLASSIFIER_OUTPUTS: tuple[str, str, str] = ("au_prob", "au_intensity", "emotion_prob")

# Keys of ModelOutput.timings.
TIMING_NORMALIZE = "normalize"
TIMING_CLASSIFY = "classify"
TIMING_INFER = "infer"

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def config_from_metadata(meta: Mapping[str, str], source: str) -> ModelConfig:
    """Rebuild the ModelConfig embedded in an ONNX file's metadata; ``source`` names the file."""
    if META_CONFIG not in meta:
        raise ValueError(
            f"{source}: ONNX metadata has no {META_CONFIG!r} key (keys: {sorted(meta)}); "
            "was it exported with norface_rt.export.export_onnx?"
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: invalid {META_CONFIG!r} metadata: {e}") from e
    trained = meta.get(META_TRAINED)
    if trained is not None and trained != str(cfg.trained).lower():
        raise ValueError(
            f"{source}: metadata {META_TRAINED}={trained!r} contradicts config trained={cfg.trained}"
        )
    model_id = meta.get(META_MODEL_ID)
    if model_id is not None and model_id != cfg.model_id:
        raise ValueError(
            f"{source}: metadata {META_MODEL_ID}={model_id!r} contradicts config model_id={cfg.model_id!r}"
        )
    return cfg


def validate_crops(crops: np.ndarray, cfg: ModelConfig) -> None:
    """Reject anything but (N, S, S, C) uint8 with a message stating expected vs actual."""
    s, c = cfg.img_size, cfg.in_chans
    shape = getattr(crops, "shape", None)
    dtype = getattr(crops, "dtype", type(crops).__name__)
    if (not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4
            or crops.shape[1:] != (s, s, c)):
        got = f"{tuple(shape)} {dtype}" if shape is not None else f"{type(crops).__name__}"
        raise ValueError(f"crops: expected (N, {s}, {s}, {c}) uint8, got {got}")


def preprocess(crops: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(N, S, S, C) uint8 RGB -> (N, C, S, S) float32 ``(x/255 - mean) / std``, C-contiguous."""
    validate_crops(crops, cfg)
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def denormalize(x: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Inverse of :func:`preprocess` for network images: (N, C, S, S) float -> (N, S, S, C) uint8,
    clipped (the decoder output is linear and may leave the valid range)."""
    mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, dtype=np.float32).reshape(1, -1, 1, 1)
    img = (np.asarray(x, dtype=np.float32) * std + mean) * 255.0
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


@dataclass
class ModelOutput:
    """Per-crop results, row i belonging to crop i. ``normalized`` is None unless requested.

    ``timings`` maps stage -> seconds spent on the whole batch: ``{"normalize", "classify"}``
    when the backend ran the two networks separately, ``{"infer"}`` when it ran one combined
    graph, empty when nothing ran (N = 0). Divide by ``len(self)`` for a per-face figure.
    """

    normalized: np.ndarray | None  # (N, S, S, 3) uint8 RGB
    au_prob: np.ndarray  # (N, A) float32 in [0, 1]
    au_intensity: np.ndarray  # (N, A) float32 in [0, cfg.au_intensity_max]
    emotion_prob: np.ndarray  # (N, E) float32, rows sum to 1
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (whole batch)

    def __len__(self) -> int:
        return int(self.au_prob.shape[0])


class Backend(ABC):
    """Runs the exported Norface inference graph. Subclasses implement :meth:`_forward` only.

    A backend that can time normalization and classification separately also overrides
    :meth:`_forward_timed`; the default times the whole :meth:`_forward` call as ``"infer"``.
    """

    config: ModelConfig
    name: str

    @abstractmethod
    def _forward(self, x: np.ndarray) -> Outputs:
        """x (N>=1, C, S, S) float32 -> (normalized NCHW float, au_prob, au_intensity, emotion_prob)."""

    def _forward_timed(self, x: np.ndarray) -> tuple[Outputs, dict[str, float]]:
        """:meth:`_forward` plus its stage timings in seconds (see :class:`ModelOutput`)."""
        t0 = time.perf_counter()
        outs = self._forward(x)
        return outs, {TIMING_INFER: time.perf_counter() - t0}

    def infer(self, crops: np.ndarray, *, want_normalized: bool = False) -> ModelOutput:
        """Analyse aligned crops (N, S, S, 3) uint8 RGB; N = 0 returns empty arrays without running."""
        cfg = self.config
        validate_crops(crops, cfg)
        n, a, e = crops.shape[0], len(cfg.au_names), len(cfg.emotion_names)
        if n == 0:
            s = cfg.img_size
            return ModelOutput(
                normalized=np.zeros((0, s, s, cfg.in_chans), np.uint8) if want_normalized else None,
                au_prob=np.zeros((0, a), np.float32),
                au_intensity=np.zeros((0, a), np.float32),
                emotion_prob=np.zeros((0, e), np.float32),
            )
        (normalized, au_prob, au_int, emo), timings = self._forward_timed(preprocess(crops, cfg))
        return ModelOutput(
            normalized=denormalize(normalized, cfg) if want_normalized else None,
            au_prob=np.asarray(au_prob, dtype=np.float32).reshape(n, a),
            au_intensity=np.asarray(au_int, dtype=np.float32).reshape(n, a),
            emotion_prob=np.asarray(emo, dtype=np.float32).reshape(n, e),
            timings=dict(timings),
        )

    def close(self) -> None:
        """Release sessions / device memory; the default holds nothing that needs it."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model_id={self.config.model_id!r})"
