"""Geometry vectors and per-track baselines (norface_rt.faces.geometry), no MediaPipe needed."""

from __future__ import annotations

import numpy as np
import pytest

from norface_rt.faces.geometry import (
    MEDIAPIPE_BLENDSHAPES,
    TrackBaseline,
    blendshape_vector,
    neutral_distance,
)


def scores(**kw: float) -> dict[str, float]:
    d = {n: 0.0 for n in MEDIAPIPE_BLENDSHAPES}
    d["_neutral"] = 0.9  # MediaPipe's catch-all category is not part of the vector
    d.update(kw)
    return d


def test_vector_follows_the_given_order_and_clips() -> None:
    v = blendshape_vector(scores(jawOpen=0.4, mouthSmileLeft=1.3), MEDIAPIPE_BLENDSHAPES)
    assert v.dtype == np.float32 and v.shape == (51,)
    assert v[MEDIAPIPE_BLENDSHAPES.index("jawOpen")] == pytest.approx(0.4)
    assert v[MEDIAPIPE_BLENDSHAPES.index("mouthSmileLeft")] == 1.0
    names = ("mouthSmileLeft", "jawOpen")
    np.testing.assert_allclose(blendshape_vector(scores(jawOpen=0.4), names), [0.0, 0.4])


def test_vector_errors_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="has none"):
        blendshape_vector(None, MEDIAPIPE_BLENDSHAPES)
    with pytest.raises(ValueError, match="missing \\['jawOpen'\\]"):
        blendshape_vector({"mouthSmileLeft": 0.1}, ("mouthSmileLeft", "jawOpen"))


def baseline(**kw: object) -> TrackBaseline:
    return TrackBaseline([0.1, 0.2], [0.05, 0.05], **kw)  # type: ignore[arg-type]


def test_first_frame_is_not_corrected_and_a_long_resting_offset_is_removed() -> None:
    tb = baseline(warmup=10, refresh=1)
    rest = np.array([0.15, 0.2], np.float32)  # this person's brows sit 1 sd lower
    np.testing.assert_allclose(tb.apply(1, rest), rest)  # one look: no evidence yet
    for _ in range(300):
        out = tb.apply(1, rest)
    np.testing.assert_allclose(out, [0.1 + 0.05 * 10 / 310, 0.2], atol=1e-6)


def test_correction_is_bounded_by_the_population_spread() -> None:
    """A minute of crying is not a resting face: at most max_shift sd are removed."""
    tb = baseline(warmup=1, refresh=1, max_shift=2.0)
    crying = np.array([0.9, 0.2], np.float32)
    for _ in range(200):
        out = tb.apply(7, crying)
    assert tb.offset(7)[0] == pytest.approx(0.1 * 199 / 200, rel=1e-5)
    assert out[0] > 0.75  # still reads as strongly active


def test_baseline_is_a_low_quantile_so_expressions_do_not_move_it() -> None:
    tb = baseline(warmup=1, refresh=1, quantile=0.2)
    rng = np.random.default_rng(0)
    for i in range(500):
        smile = 0.6 if i % 3 == 0 else 0.0  # smiling a third of the time
        tb.apply(3, np.array([0.15 + smile, 0.2], np.float32) + rng.normal(0, 0.005, 2).astype(np.float32))
    assert tb.offset(3)[0] == pytest.approx(0.05, abs=0.01)


def test_tracks_are_independent_and_bounded() -> None:
    tb = baseline(warmup=1, refresh=1, max_tracks=2)
    for t in (1, 2):
        for _ in range(20):
            tb.apply(t, np.array([0.1 + 0.05 * t, 0.2], np.float32))
    assert tb.offset(1)[0] < tb.offset(2)[0]
    tb.apply(3, np.array([0.1, 0.2], np.float32))  # a third track evicts the oldest
    assert not tb.offset(1).any()
    tb.retain([3])
    assert not tb.offset(2).any()


def test_a_clip_that_opens_on_an_expression_keeps_the_population_neutral() -> None:
    """Crying for the first 200 frames is not neutral evidence: the baseline stays at the
    population neutral (nothing is subtracted) until resting frames arrive, then adapts to them."""
    tb = baseline(warmup=10, refresh=1, neutral_radius=2.0)
    crying = np.array([0.45, 0.2], np.float32)  # 7 sd off in the first score: far from any rest
    for _ in range(200):
        out = tb.apply(5, crying)
    assert tb.evidence(5) == 0
    assert not tb.offset(5).any()
    np.testing.assert_allclose(out, crying)
    rest = np.array([0.17, 0.2], np.float32)  # this person's resting face: 1.4 sd, RMS 0.99
    for _ in range(300):
        out = tb.apply(5, rest)
    assert tb.evidence(5) == 300
    assert tb.offset(5)[0] == pytest.approx(0.07 * 299 / 309, rel=1e-4)
    # the same clip without the gate learns the crying as this person's neutral
    legacy = baseline(warmup=10, refresh=1)
    for _ in range(200):
        legacy.apply(5, crying)
    assert legacy.offset(5)[0] > 0.09


def test_neutral_distance_is_rms_of_standardised_scores() -> None:
    ref, sd = np.array([0.1, 0.2], np.float32), np.array([0.05, 0.1], np.float32)
    assert neutral_distance(ref, ref, sd) == 0.0
    assert neutral_distance(np.array([0.2, 0.2], np.float32), ref, sd) == pytest.approx(np.sqrt(2.0))
    d = neutral_distance(np.stack([ref, ref + sd]), ref, sd)
    np.testing.assert_allclose(d, [0.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("kw, match", [
    ({"quantile": 1.5}, "quantile"), ({"window": 0}, "window"), ({"max_shift": -1}, "max_shift"),
    ({"neutral_radius": 0.0}, "neutral_radius")])
def test_bad_settings_are_refused(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        baseline(**kw)
    with pytest.raises(ValueError, match="equal-length"):
        TrackBaseline([0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape"):
        baseline().apply(1, np.zeros(3, np.float32))
