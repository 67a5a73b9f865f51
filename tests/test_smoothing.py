"""Per-track exponential smoothing: the time-constant math, resets, and what it leaves alone."""

from __future__ import annotations

import math

import pytest

from norface_rt.smoothing import RESET_AFTER, TrackSmoother
from norface_rt.types import FaceResult


def fr(track_id: int, happy: float, au: float = 1.0) -> FaceResult:
    return FaceResult(track_id=track_id, box=(0.0, 0.0, 10.0, 10.0), confidence=0.9, pose=None,
                      au_occurrence={"AU12": au / 5}, au_intensity={"AU12": au},
                      emotions={"happy": happy, "neutral": 1.0 - happy},
                      top_emotion="happy" if happy >= 0.5 else "neutral", model_id="m")


def test_step_response_follows_the_time_constant() -> None:
    sm = TrackSmoother(tau=0.5)
    sm.apply([fr(0, 0.0, 0.0)], 0.0)
    out = []
    for i in range(1, 31):  # a step to 1.0 at 30 fps
        f = fr(0, 1.0, 5.0)
        sm.apply([f], i / 30)
        out.append(f)
    # after t = tau the response is 1 - 1/e of the step, whatever the frame rate
    at_tau = out[14]  # t = 15/30 = 0.5 s
    assert at_tau.emotions["happy"] == pytest.approx(1 - math.exp(-1), abs=1e-9)
    assert at_tau.au_intensity["AU12"] == pytest.approx(5 * (1 - math.exp(-1)), abs=1e-9)
    assert sum(at_tau.emotions.values()) == pytest.approx(1.0)  # still a distribution
    assert out[0].top_emotion == "neutral" and out[-1].top_emotion == "happy"  # recomputed


def test_tracks_are_independent_and_reset_after_a_gap_or_without_time() -> None:
    sm = TrackSmoother(tau=1.0)
    a, b = fr(0, 0.0), fr(1, 1.0)
    sm.apply([a, b], 0.0)
    a2, b2 = fr(0, 1.0), fr(1, 1.0)
    sm.apply([a2, b2], 0.1)
    assert 0 < a2.emotions["happy"] < 0.2 and b2.emotions["happy"] == pytest.approx(1.0)
    late = fr(0, 0.0)
    sm.apply([late], 0.1 + RESET_AFTER * 1.0 + 0.01)  # gone longer than the reset gap
    assert late.emotions["happy"] == 0.0
    sm.apply([fr(0, 1.0)], None)  # no time: raw values, state cleared
    nxt = fr(0, 0.0)
    sm.apply([nxt], 20.0)
    assert nxt.emotions["happy"] == 0.0
    untracked = fr(-1, 0.7)
    sm.apply([untracked], 20.1)
    assert untracked.emotions["happy"] == 0.7
    back = fr(0, 1.0)
    sm.apply([back], 19.0)  # time going backwards (a looping file): restart
    assert back.emotions["happy"] == 1.0


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf")])
def test_bad_time_constant_is_refused(tau: float) -> None:
    with pytest.raises(ValueError, match="--smooth"):
        TrackSmoother(tau)
