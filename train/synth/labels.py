"""Exact labels for synthetic faces: ICT/ARKit blendshape weights -> FACS AUs -> emotion.

The mapping is written down and justified in docs/au_mapping.md; this module is its executable
form and the single source of truth (the doc quotes these tables). Bump
:data:`LABEL_MAPPING_VERSION` whenever a number here changes: it is stored in every shard's
meta.json so models trained on different mappings are never mixed up.

Conventions:
* A blendshape weight ``w`` in [0, 1] maps linearly to FACS intensity ``5 w`` (0 = absent,
  1..5 = A..E), so the full ARKit range spans the full FACS range.
* Bilateral AUs take the stronger side (FACS scores an AU present when it is present on either
  side); AU43 (eyes closed) takes the weaker eye, because one closed eye is a wink (AU46).
* Occurrence is intensity >= 1 (the A "trace" level, the BP4D/DISFA convention). Intensities within
  ``OCCURRENCE_MARGIN`` of that threshold get occurrence NaN (unlabelled): that is where human
  coders disagree too, and a masked label is better than a coin flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES

LABEL_MAPPING_VERSION = "2.1"
OCCURRENCE_THRESHOLD = 1.0
OCCURRENCE_MARGIN = 0.25
NEUTRAL_MAX_INTENSITY = 0.75  # every expressive AU below this -> neutral
# Actions that carry no emotion on their own (EMFACS predicts nothing from them): lips parted and
# jaw dropped by speech, a blink, a squint against light up to intensity B. A face showing only
# these, and no prototype, is emotionally neutral: real neutral faces talk, blink and squint.
NON_EMOTIONAL_LIMITS: dict[int, float] = {25: 5.0, 26: 3.0, 43: 5.0, 7: 2.5}

# AU -> how it is read from blendshapes. Each entry: list of (shape base name, weight); a base name
# without _L/_R is bilateral-less (jawOpen). "side" says how L and R combine.
@dataclass(frozen=True)
class AURule:
    au: str
    shapes: tuple[tuple[str, float], ...]
    side: str = "max"  # max: either side counts; min: both sides needed (AU43)
    why: str = ""


AU_RULES: tuple[AURule, ...] = (
    AURule("AU01", (("browInnerUp", 1.0),), why="frontalis pars medialis raises the inner brow"),
    AURule("AU02", (("browOuterUp", 1.0),), why="frontalis pars lateralis raises the outer brow"),
    AURule("AU04", (("browDown", 1.0),), why="corrugator/depressor pull the brows down"),
    AURule("AU05", (("eyeWide", 1.0),), why="levator palpebrae widens the eye aperture"),
    AURule("AU06", (("cheekSquint", 1.0), ("cheekRaiser", 1.0)), why=(
        "orbicularis oculi pars orbitalis lifts the cheek; ICT splits it into two shapes, "
        "their sum (capped) is the cheek lift")),
    AURule("AU07", (("eyeSquint", 1.0),), why="pars palpebralis tightens the lower lid"),
    AURule("AU09", (("noseSneer", 1.0),), why="levator labii alaeque nasi wrinkles the nose"),
    AURule("AU10", (("mouthUpperUp", 1.0),), why="levator labii superioris raises the upper lip"),
    AURule("AU12", (("mouthSmile", 1.0),), why="zygomaticus major pulls the lip corners up"),
    AURule("AU14", (("mouthDimple", 1.0),), why="buccinator tightens the corners into dimples"),
    AURule("AU15", (("mouthFrown", 1.0),), why="depressor anguli oris pulls the corners down"),
    AURule("AU17", (("mouthShrugLower", 1.0),), why="mentalis pushes the chin boss and lower lip up"),
    AURule("AU20", (("mouthStretch", 1.0),), why="risorius stretches the lips sideways"),
    AURule("AU23", (("mouthRollUpper", 0.5), ("mouthRollLower", 0.5)), why=(
        "orbicularis oris tightens and narrows the red of both lips; ARKit has no tightener, the "
        "inward roll of both lips is the closest visible change (strong rolls would be AU28)")),
    AURule("AU24", (("mouthPress", 1.0),), why="orbicularis oris presses the lips together"),
    AURule("AU25", (("jawOpen", 1.0), ("mouthClose", -1.0), ("mouthLowerDown", 0.5),
                    ("mouthUpperUp", 0.5), ("mouthFunnel", 0.5)), why=(
        "lips part: the jaw opens them unless mouthClose (lips sealed over an open jaw) cancels it; "
        "lowering the lower lip (AU16) or raising the upper (AU10) and funnelling also part them")),
    AURule("AU26", (("jawOpen", 1.0),), why="the jaw drops (ARKit jawOpen covers AU26/AU27)"),
    AURule("AU43", (("eyeBlink", 1.0),), side="min", why=(
        "eyelids closed; both eyes are needed because one closed eye is AU46 (wink)")),
)

if tuple(r.au for r in AU_RULES) != AU_NAMES:
    raise RuntimeError("AU_RULES must list exactly norface_rt.config.AU_NAMES in order")


@dataclass(frozen=True)
class Prototype:
    """EMFACS-style prediction: any variant whose AUs are all present predicts the emotion."""

    emotion: str
    variants: tuple[tuple[int, ...], ...]
    forbid: tuple[int, ...] = ()  # AUs whose presence vetoes the prediction
    note: str = ""


# After Friesen & Ekman's EMFACS-7 prediction table (as summarised in the FACS Investigator's
# Guide, 2002, including its open-mouth anger, 10+25/26 disgust and 5+26 surprise variants),
# restricted to the AUs the project labels. Contempt is unilateral (R12A+R14A) and is
# tested separately on left/right differences.
PROTOTYPES: tuple[Prototype, ...] = (
    Prototype("happy", ((6, 12), (12,)), forbid=(15,), note="12 bilateral; 6+12 is the Duchenne smile"),
    Prototype("sad", ((1, 4, 15), (6, 15), (1, 15), (1, 4, 17), (4, 15, 17), (1, 4, 15, 43),
                      (1, 4, 20, 43)),
              forbid=(12,), note="1+4+15+43 and 1+4+20+43 (with 6/7, 17, 24 or 25/26) are crying: "
                                 "eyes squeezed shut, lips stretched"),
    Prototype("surprise", ((1, 2, 5), (1, 2, 26), (1, 2, 5, 26), (5, 26)), forbid=(4,)),
    Prototype("fear", ((1, 2, 4, 5), (1, 2, 4, 20), (1, 2, 5, 20), (5, 20), (1, 2, 4, 5, 20, 26))),
    Prototype("disgust", ((9,), (10, 17), (10, 15), (9, 15), (9, 17), (4, 10)),
              forbid=(12,)),
    Prototype("anger", ((4, 5, 7), (4, 7, 23), (4, 7, 24), (4, 5, 23), (4, 5, 24), (4, 23, 24),
                        (4, 7, 17), (4, 5, 7, 10, 25), (4, 7, 10, 26), (4, 5, 10, 26)),
              forbid=(1, 12), note="the open-mouth variants (10+25/26) are shouting"),
)
CONTEMPT_MIN_DIFF = 1.0  # intensity difference between the sides that makes an AU unilateral


def _shape_indices(names: Sequence[str]) -> dict[str, tuple[int | None, int | None]]:
    idx = {n: i for i, n in enumerate(names)}
    bases = list(dict.fromkeys(s for r in AU_RULES for s, _ in r.shapes))
    out: dict[str, tuple[int | None, int | None]] = {}
    missing = []
    for b in bases:
        if b in idx:
            out[b] = (idx[b], idx[b])
        elif f"{b}_L" in idx and f"{b}_R" in idx:
            out[b] = (idx[f"{b}_L"], idx[f"{b}_R"])
        else:
            missing.append(b)
    if missing:
        raise ValueError(f"blendshape names lack {missing} (each as a midline name or as "
                         f"_L/_R pair); got {len(names)} names")
    return out


class AULabeler:
    """Blendshape weights (K,) in the ICT order -> AU intensities, occurrences and emotion."""

    def __init__(self, shape_names: Sequence[str]) -> None:
        self.shape_names = tuple(shape_names)
        self._idx = _shape_indices(self.shape_names)

    def _side(self, w: np.ndarray, base: str, side: int) -> float:
        i = self._idx[base][side]
        return float(w[i]) if i is not None else 0.0

    def side_intensities(self, weights: np.ndarray) -> np.ndarray:
        """(A, 2) FACS intensities for the left and right side (identical for midline AUs)."""
        w = np.asarray(weights, np.float64).ravel()
        if w.size != len(self.shape_names):
            raise ValueError(f"weights must have {len(self.shape_names)} values, got {w.size}")
        if np.any(~np.isfinite(w)):
            raise ValueError("weights must be finite")
        out = np.zeros((len(AU_RULES), 2), np.float64)
        for a, rule in enumerate(AU_RULES):
            for s in (0, 1):
                v = sum(k * self._side(w, base, s) for base, k in rule.shapes)
                out[a, s] = 5.0 * min(max(v, 0.0), 1.0)
        return out

    def intensities(self, weights: np.ndarray) -> np.ndarray:
        """(A,) float32 FACS intensities in [0, 5], order of AU_NAMES."""
        sides = self.side_intensities(weights)
        out = np.empty(len(AU_RULES), np.float32)
        for a, rule in enumerate(AU_RULES):
            out[a] = sides[a].min() if rule.side == "min" else sides[a].max()
        return out

    @staticmethod
    def occurrence(intensity: np.ndarray, margin: float = OCCURRENCE_MARGIN) -> np.ndarray:
        """(A,) float32 in {0, 1}, NaN within ``margin`` of the threshold."""
        i = np.asarray(intensity, np.float32)
        occ = (i >= OCCURRENCE_THRESHOLD).astype(np.float32)
        if margin > 0:
            occ[np.abs(i - OCCURRENCE_THRESHOLD) < margin] = np.nan
        return occ

    def emotion(self, weights: np.ndarray) -> int:
        """Index into EMOTION_NAMES, or -1 for non-prototypic or ambiguous expressions."""
        sides = self.side_intensities(weights)
        inten = self.intensities(weights)
        num = {int(n[2:]): k for k, n in enumerate(AU_NAMES)}
        present = {n for n, k in num.items() if inten[k] >= OCCURRENCE_THRESHOLD}
        expressive = [k for n, k in num.items() if n != 43]
        if float(inten[expressive].max()) < NEUTRAL_MAX_INTENSITY:
            return EMOTION_NAMES.index("neutral")
        matched: dict[str, tuple[int, ...]] = {}
        for p in PROTOTYPES:
            if any(f in present for f in p.forbid):
                continue
            hits = [v for v in p.variants if set(v) <= present]
            if p.emotion == "happy":
                # the bare-12 variant must be bilateral, otherwise it is contempt's smirk
                k12 = num[12]
                hits = [v for v in hits if v != (12,) or sides[k12].min() >= 2.0]
            if hits:
                matched[p.emotion] = max(hits, key=len)
        contempt = self._contempt(sides, num)
        if contempt:
            matched["contempt"] = (12, 14)
            matched.pop("happy", None)  # a one-sided smile is the contempt smirk
        # A prediction whose AUs are a strict subset of another's is subsumed (1+2+5 surprise
        # inside 1+2+4+5 fear).
        names = list(matched)
        for a in names:
            for b in names:
                if a != b and a in matched and b in matched and \
                        set(matched[a]) < set(matched[b]):
                    matched.pop(a)
        if len(matched) == 1:
            return EMOTION_NAMES.index(next(iter(matched)))
        if not matched and self._only_non_emotional(inten, num):
            return EMOTION_NAMES.index("neutral")
        return -1

    @staticmethod
    def _only_non_emotional(inten: np.ndarray, num: dict[int, int]) -> bool:
        """Every AU below the neutral maximum, except speech, blinks and a light squint (see
        :data:`NON_EMOTIONAL_LIMITS`)."""
        for n, k in num.items():
            if inten[k] >= NON_EMOTIONAL_LIMITS.get(n, NEUTRAL_MAX_INTENSITY):
                return False
        return True

    @staticmethod
    def _contempt(sides: np.ndarray, num: dict[int, int]) -> bool:
        """Unilateral AU12 and/or AU14 (R12A+R14A or L12A+L14A), nothing else mouth-wide."""
        uni = False
        for au in (12, 14):
            lo, hi = sorted(sides[num[au]])
            if hi >= OCCURRENCE_THRESHOLD and hi - lo >= CONTEMPT_MIN_DIFF and \
                    lo < OCCURRENCE_THRESHOLD:
                uni = True
        if not uni:
            return False
        for au in (12, 14):
            if sides[num[au]].min() >= 2.0:
                return False  # both sides clearly on: a (lopsided) smile, not a smirk
        return True

    def labels(self, weights: np.ndarray) -> dict[str, np.ndarray | np.int64]:
        """The label fields of the common sample format."""
        inten = self.intensities(weights)
        return {
            "au_intensity": inten.astype(np.float32),
            "au_occurrence": self.occurrence(inten),
            "emotion": np.int64(self.emotion(weights)),
        }


def au_rules_table() -> list[dict[str, object]]:
    """The AU mapping as plain data, for meta.json and the docs."""
    return [{"au": r.au, "shapes": [list(s) for s in r.shapes], "side": r.side, "why": r.why}
            for r in AU_RULES]


def prototypes_table() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"emotion": p.emotion, "variants": [list(v) for v in p.variants], "forbid": list(p.forbid)}
        for p in PROTOTYPES]
    rows.append({"emotion": "contempt", "variants": [["unilateral 12"], ["unilateral 14"]],
                 "forbid": []})
    return rows
