"""The geometry input of a model: MediaPipe's blendshapes as a vector, and per-track baselines.

MediaPipe's face landmarker scores 52 ARKit-style blendshapes for every face it finds (a network
trained on real faces, so its reading of an expression transfers from person to person better
than pixels of a small training set do). A model whose config declares ``geometry_inputs =
("blendshapes",)`` takes the 51 expressive scores (``_neutral`` left out), in the order of
``ModelConfig.blendshape_names``, as a third input beside the two face images.

People differ in how their resting face reads (brows that sit low, eyes that look narrow), and
such an offset looks like a weak expression. In video the same person is seen many times, so a
per-track baseline can remove it (:class:`TrackBaseline`): every blendshape is an activation
whose neutral value is the low end of that person's range, so the baseline is a low running
percentile of each score over the track's recent frames. It moves the face towards the population
neutral (``ModelConfig.geometry_reference``) by at most ``max_shift`` population standard
deviations (``ModelConfig.geometry_spread``): a resting face differs from the population by about
that much, an expression held for a long time (a minute of crying) by more, and must not be
subtracted away.

The baseline starts at the population neutral and learns only from frames that could be the
person's resting face: a frame counts as neutral evidence when its distance from the population
neutral (root mean square of the standardised scores) is within ``neutral_radius``, the distance
that real neutral faces of the calibration pool stay within (``ModelConfig.geometry_neutral_radius``).
Why: a clip that opens on an expression (crying, laughing) would otherwise teach the baseline that
expression as the person's neutral and subtract it. The correction grows with the neutral evidence
(frames counted) and is zero for stills.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from norface_rt.config import BLENDSHAPE_NAMES

# The 51 expressive categories of MediaPipe's FaceLandmarker, in the bundle's output order: its
# 52 categories (config.BLENDSHAPE_NAMES) without "_neutral", a catch-all score and not an
# expression.
MEDIAPIPE_BLENDSHAPES: tuple[str, ...] = tuple(n for n in BLENDSHAPE_NAMES if n != "_neutral")


def blendshape_vector(scores: Mapping[str, float] | None, names: Sequence[str]) -> np.ndarray:
    """``names`` order, float32; raises naming what is missing (a landmarker without blendshapes
    cannot feed a model that consumes them)."""
    if scores is None:
        raise ValueError("blendshapes: the model consumes MediaPipe blendshapes but the face has "
                         "none (use a face_landmarker bundle with blendshapes, e.g. "
                         "face_landmarker_v2_with_blendshapes.task)")
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"blendshapes: expected the {len(names)} categories of the model config, "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    v = np.fromiter((scores[n] for n in names), np.float32, count=len(names))
    return np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0)


def neutral_distance(vectors: np.ndarray, reference: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Root mean square of the standardised scores: how far readings are from the population
    neutral, in population standard deviations (0 for the average neutral face)."""
    z = (np.asarray(vectors, np.float32) - reference) / spread
    return np.sqrt(np.mean(z * z, axis=-1))


class TrackBaseline:
    """Per-track neutral baseline of geometry vectors (see module doc); one per stream.

    Up to ``window`` neutral-evidence frames are kept per track (bounded memory); the baseline is
    their ``quantile`` per feature, recomputed every ``refresh`` evidence frames. With ``m``
    evidence frames the correction is ``(m - 1) / (m - 1 + warmup)`` of the clipped offset, so a
    track starts at the population neutral and a face seen once is not corrected.
    ``neutral_radius`` None counts every frame as evidence (the behaviour before the gate).
    """

    def __init__(self, reference: Sequence[float], spread: Sequence[float], *,
                 neutral_radius: float | None = None,
                 window: int = 900, quantile: float = 0.2, warmup: int = 120,
                 max_shift: float = 2.0, refresh: int = 10, max_tracks: int = 256) -> None:
        ref = np.asarray(reference, np.float32)
        sd = np.asarray(spread, np.float32)
        if ref.ndim != 1 or ref.shape != sd.shape or ref.size == 0:
            raise ValueError(f"reference/spread: expected two equal-length 1-D vectors, got "
                             f"{ref.shape} and {sd.shape}")
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        for name, v in (("window", window), ("warmup", warmup), ("refresh", refresh),
                        ("max_tracks", max_tracks)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        if neutral_radius is not None and not neutral_radius > 0:
            raise ValueError(f"neutral_radius must be > 0 or None, got {neutral_radius}")
        self.neutral_radius = None if neutral_radius is None else float(neutral_radius)
        self.reference, self.spread = ref, np.maximum(sd, 1e-6)
        self.window, self.quantile, self.warmup = int(window), float(quantile), int(warmup)
        self.max_shift, self.refresh, self.max_tracks = float(max_shift), int(refresh), int(max_tracks)
        self._history: dict[int, deque[np.ndarray]] = {}
        self._seen: dict[int, int] = {}
        self._offset: dict[int, np.ndarray] = {}

    def offset(self, track_id: int) -> np.ndarray:
        """What :meth:`apply` subtracts for this track now (zeros for an unknown track)."""
        return self._offset.get(track_id, np.zeros_like(self.reference))

    def is_neutral_evidence(self, vector: np.ndarray) -> bool:
        """Whether a reading is close enough to the population neutral to be a resting face."""
        if self.neutral_radius is None:
            return True
        return bool(neutral_distance(vector, self.reference, self.spread) <= self.neutral_radius)

    def apply(self, track_id: int, vector: np.ndarray) -> np.ndarray:
        """Record ``vector`` for the track (when it is neutral evidence) and return it corrected
        towards the population."""
        v = np.asarray(vector, np.float32)
        if v.shape != self.reference.shape:
            raise ValueError(f"vector: expected shape {self.reference.shape}, got {v.shape}")
        hist = self._history.get(track_id)
        if hist is None:
            if len(self._history) >= self.max_tracks:  # forget the track seen longest ago
                oldest = next(iter(self._history))
                self.forget(oldest)
            hist = self._history[track_id] = deque(maxlen=self.window)
            self._seen[track_id] = 0
        if self.is_neutral_evidence(v):
            hist.append(v)
            n = self._seen[track_id] = self._seen[track_id] + 1
            if n % self.refresh == 1 or self.refresh == 1:
                base = np.quantile(np.stack(hist), self.quantile, axis=0).astype(np.float32)
                limit = self.max_shift * self.spread
                shift = np.clip(base - self.reference, -limit, limit)
                self._offset[track_id] = shift * np.float32((n - 1) / (n - 1 + self.warmup))
        return np.clip(v - self.offset(track_id), 0.0, 1.0)

    def evidence(self, track_id: int) -> int:
        """Neutral-evidence frames counted for the track so far."""
        return self._seen.get(track_id, 0)

    def forget(self, track_id: int) -> None:
        self._history.pop(track_id, None)
        self._seen.pop(track_id, None)
        self._offset.pop(track_id, None)

    def retain(self, track_ids: Sequence[int]) -> None:
        """Drop state of tracks not in ``track_ids`` (tracks the tracker has ended)."""
        for t in [t for t in self._history if t not in set(track_ids)]:
            self.forget(t)
