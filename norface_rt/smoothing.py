"""Optional temporal smoothing of each tracked face's outputs (``--smooth SECONDS``).

Frame-by-frame estimates flicker: a face between two expressions swaps its top emotion from frame
to frame, and AU intensities jitter by a few tenths. An exponential moving average per track,
with a time constant in seconds rather than a weight per frame, smooths the same amount whatever
the frame rate (or a live source's dropped frames):

    alpha = 1 - exp(-dt / tau),   s_t = s_{t-1} + alpha * (x_t - s_{t-1})

applied to AU occurrence probabilities, AU intensities and emotion probabilities (which stay a
distribution: a convex combination of distributions is one); ``top_emotion`` is recomputed from
the smoothed emotions. ``dt`` is the time between the track's frames from their ``pts``. Off by
default: smoothing delays every change by about ``tau`` seconds.

Not smoothed: stills (unrelated pictures), frames without a time (a track then restarts from its
raw values), a track after a gap longer than ``RESET_AFTER`` time constants or a time going
backwards (a looping file restarting), and faces without a track id. Box, pose, landmarks and
blendshapes are left raw (they are measurements, not estimates that flicker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from norface_rt.types import FaceResult

RESET_AFTER = 5.0  # time constants: a track unseen for longer starts afresh


@dataclass(slots=True)
class _State:
    t: float
    au_occurrence: dict[str, float]
    au_intensity: dict[str, float]
    emotions: dict[str, float]


def _blend(prev: dict[str, float], new: dict[str, float], alpha: float) -> dict[str, float]:
    if prev.keys() != new.keys():  # another model or label set: nothing to blend with
        return dict(new)
    return {k: prev[k] + alpha * (v - prev[k]) for k, v in new.items()}


class TrackSmoother:
    """Exponential smoothing of one stream's faces, per track id (one instance per stream)."""

    def __init__(self, tau: float) -> None:
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"--smooth: expected a time constant > 0 seconds, got {tau!r}")
        self.tau = float(tau)
        self._tracks: dict[int, _State] = {}

    def apply(self, faces: list[FaceResult], t: float | None) -> None:
        """Smooth ``faces`` (one frame at time ``t`` seconds, None when unknown) in place."""
        if t is None or not math.isfinite(t):
            self._tracks.clear()
            return
        seen = set()
        for f in faces:
            if f.track_id < 0:
                continue
            seen.add(f.track_id)
            st = self._tracks.get(f.track_id)
            dt = None if st is None else t - st.t
            if st is not None and dt is not None and 0.0 < dt <= RESET_AFTER * self.tau:
                alpha = 1.0 - math.exp(-dt / self.tau)
                f.au_occurrence = _blend(st.au_occurrence, f.au_occurrence, alpha)
                f.au_intensity = _blend(st.au_intensity, f.au_intensity, alpha)
                f.emotions = _blend(st.emotions, f.emotions, alpha)
                if f.emotions:
                    f.top_emotion = max(f.emotions, key=f.emotions.__getitem__)
            self._tracks[f.track_id] = _State(t, dict(f.au_occurrence), dict(f.au_intensity),
                                              dict(f.emotions))
        # Forget tracks gone for longer than the reset gap (bounded memory on long streams).
        horizon = t - RESET_AFTER * self.tau
        for tid in [k for k, s in self._tracks.items() if k not in seen and not horizon <= s.t <= t]:
            del self._tracks[tid]
