"""The AU / emotion mapping of docs/au_mapping.md, checked rule by rule (no data files needed)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train.synth.expressions import AU_TO_SHAPES, ExpressionSampler
from train.synth.labels import AU_RULES, OCCURRENCE_MARGIN, AULabeler

# The ICT-FaceKit expression order (ARKit names plus cheekRaiser_L/R), as in the archive.
ICT_NAMES = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R",
    "mouthFrown_L", "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L",
    "mouthLowerDown_R", "mouthPress_L", "mouthPress_R", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L",
    "mouthSmile_R", "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L", "mouthUpperUp_R",
    "noseSneer_L", "noseSneer_R", "cheekRaiser_L", "cheekRaiser_R",
)
LAB = AULabeler(ICT_NAMES)


def weights(**kw: float) -> np.ndarray:
    """Blendshape vector; a base name without _L/_R sets both sides (or the midline shape)."""
    w = np.zeros(len(ICT_NAMES), np.float32)
    for k, v in kw.items():
        if k in ICT_NAMES:
            w[ICT_NAMES.index(k)] = v
        else:
            w[ICT_NAMES.index(f"{k}_L")] = v
            w[ICT_NAMES.index(f"{k}_R")] = v
    return w


def au(inten: np.ndarray, name: str) -> float:
    return float(inten[AU_NAMES.index(name)])


def emotion(**kw: float) -> str:
    e = LAB.emotion(weights(**kw))
    return EMOTION_NAMES[e] if e >= 0 else "ambiguous"


def test_rules_cover_every_au_in_order() -> None:
    assert tuple(r.au for r in AU_RULES) == AU_NAMES
    assert all(r.why for r in AU_RULES)


@pytest.mark.parametrize("rule", AU_RULES, ids=lambda r: r.au)
def test_each_rule_is_linear_in_its_primary_shape(rule) -> None:  # noqa: ANN001
    base, k = rule.shapes[0]
    for w in (0.0, 0.3, 0.8):
        inten = LAB.intensities(weights(**{base: w}))
        assert au(inten, rule.au) == pytest.approx(5 * min(1.0, w * k), abs=1e-5)


def test_single_shapes_touch_only_their_au() -> None:
    inten = LAB.intensities(weights(mouthSmile=0.6))
    assert au(inten, "AU12") == pytest.approx(3.0)
    assert np.count_nonzero(inten) == 1
    jaw = LAB.intensities(weights(jawOpen=0.5))
    assert {AU_NAMES[i] for i in np.flatnonzero(jaw)} == {"AU25", "AU26"}


def test_sides_max_for_bilateral_min_for_eye_closure() -> None:
    inten = LAB.intensities(weights(mouthSmile_L=0.6, eyeBlink_L=1.0))
    assert au(inten, "AU12") == pytest.approx(3.0)  # one-sided smile still codes AU12
    assert au(inten, "AU43") == 0.0  # one closed eye is a wink (AU46), not AU43
    assert au(LAB.intensities(weights(eyeBlink=0.9)), "AU43") == pytest.approx(4.5)


def test_mouth_close_cancels_lip_parting() -> None:
    inten = LAB.intensities(weights(jawOpen=0.4, mouthClose=0.4))
    assert au(inten, "AU26") == pytest.approx(2.0)
    assert au(inten, "AU25") == 0.0


def test_cheek_raiser_shapes_add_and_cap() -> None:
    assert au(LAB.intensities(weights(cheekSquint=0.3, cheekRaiser=0.3)), "AU06") == \
        pytest.approx(3.0)
    assert au(LAB.intensities(weights(cheekSquint=0.9, cheekRaiser=0.9)), "AU06") == 5.0


def test_occurrence_threshold_and_margin() -> None:
    inten = np.zeros(len(AU_NAMES), np.float32)
    inten[:4] = [0.5, 1.0, 1.0 + OCCURRENCE_MARGIN, 4.0]
    occ = LAB.occurrence(inten)
    assert occ[0] == 0.0 and np.isnan(occ[1]) and occ[2] == 1.0 and occ[3] == 1.0
    assert not np.isnan(LAB.occurrence(inten, margin=0.0)).any()


@pytest.mark.parametrize("expected,kw", [
    ("neutral", {}),
    ("neutral", {"mouthSmile": 0.1, "eyeBlink": 1.0}),  # a blink does not make an expression
    ("happy", {"cheekSquint": 0.5, "mouthSmile": 0.7}),
    ("happy", {"mouthSmile": 0.6}),
    ("sad", {"browInnerUp": 0.6, "browDown": 0.4, "mouthFrown": 0.6}),
    ("surprise", {"browInnerUp": 0.8, "browOuterUp": 0.8, "eyeWide": 0.7, "jawOpen": 0.5}),
    ("fear", {"browInnerUp": 0.7, "browOuterUp": 0.6, "browDown": 0.4, "eyeWide": 0.8,
              "mouthStretch": 0.6}),
    ("disgust", {"noseSneer": 0.7, "mouthUpperUp": 0.5}),
    ("anger", {"browDown": 0.8, "eyeSquint": 0.6, "eyeWide": 0.4, "mouthRollUpper": 0.6,
               "mouthRollLower": 0.6}),
    ("contempt", {"mouthSmile_L": 0.5, "mouthDimple_L": 0.5}),
    ("ambiguous", {"mouthShrugLower": 0.6}),  # AU17 alone predicts nothing
    ("ambiguous", {"mouthSmile": 0.7, "browInnerUp": 0.6, "browDown": 0.5, "mouthFrown": 0.6}),
    ("ambiguous", {"mouthSmile": 0.17}),  # 0.85: between neutral and a trace AU
])
def test_emotion_prototypes(expected: str, kw: dict[str, float]) -> None:
    assert emotion(**kw) == expected


def test_fear_subsumes_surprise() -> None:
    surprise = {"browInnerUp": 0.8, "browOuterUp": 0.8, "eyeWide": 0.8}
    assert emotion(**surprise) == "surprise"
    assert emotion(**surprise, browDown=0.4, mouthStretch=0.5) == "fear"


def test_bad_weights_are_rejected_with_the_count() -> None:
    with pytest.raises(ValueError, match="55"):
        LAB.intensities(np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        LAB.intensities(np.full(len(ICT_NAMES), np.nan))
    with pytest.raises(ValueError, match="browDown"):
        AULabeler(("jawOpen",))


def test_labels_match_the_common_format() -> None:
    lab = LAB.labels(weights(mouthSmile=0.7, cheekSquint=0.5))
    assert lab["au_intensity"].dtype == np.float32 and lab["au_intensity"].shape == (18,)
    assert lab["au_occurrence"].dtype == np.float32
    assert isinstance(lab["emotion"], np.int64) and int(lab["emotion"]) == 1


def test_inverse_table_produces_each_au() -> None:
    """The sampler's AU -> shape table and the labeler agree: each AU activated alone reads back."""
    sampler = ExpressionSampler(ICT_NAMES)
    for number in AU_TO_SHAPES:
        w = np.zeros(len(ICT_NAMES))
        sampler._add_au(w, number, 0.6, np.random.default_rng(0), 0.0)
        inten = LAB.intensities(np.clip(w, 0, 1))
        assert au(inten, f"AU{number:02d}") >= 1.0, number


def test_sampler_mix_asymmetry_and_range() -> None:
    sampler = ExpressionSampler(ICT_NAMES)
    rng = np.random.default_rng(3)
    labels = collections.Counter()
    asym = 0
    for _ in range(1500):
        e = sampler.sample(rng)
        assert e.weights.dtype == np.float32 and e.weights.min() >= 0 and e.weights.max() <= 1
        lab = int(LAB.emotion(e.weights))
        labels[EMOTION_NAMES[lab] if lab >= 0 else "ambiguous"] += 1
        sl, sr = e.weights[ICT_NAMES.index("mouthSmile_L")], e.weights[ICT_NAMES.index("mouthSmile_R")]
        asym += abs(sl - sr) > 0.05
    assert labels["neutral"] >= 0.12 * 1500
    for name in EMOTION_NAMES[1:]:
        assert labels[name] >= 0.04 * 1500, (name, labels)
    assert labels["ambiguous"] <= 0.3 * 1500
    assert asym >= 50  # left/right asymmetry is present


def test_sampler_rejects_unknown_categories() -> None:
    with pytest.raises(ValueError, match="unknown expression categories"):
        ExpressionSampler(ICT_NAMES, {"joy": 1.0})
