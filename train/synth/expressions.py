"""Expression sampler: FACS-plausible blendshape combinations with a controlled category mix.

Why not uniform random weights: independent uniform shapes produce faces no one makes (smile and
frown at once, one brow up and the other down at full strength) and almost never a clean emotion
prototype, so the emotion head would see mostly label -1. Instead each sample draws a *category*
(neutral, one of the seven emotion prototypes, a FACS-plausible AU group, or a speech-like mouth
shape), builds AU activations for it, and turns those into ICT/ARKit weights through the inverse of
the label mapping. Labels are NOT taken from the category: they are recomputed from the final
weights by :mod:`train.synth.labels`, so a weak or blended prototype is labelled for what it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Category -> probability. A good share of neutral and of each prototype (the paper's datasets
# are dominated by neutral and happy; we flatten that on purpose).
CATEGORY_PROBS: dict[str, float] = {
    "neutral": 0.16,
    "happy": 0.10, "sad": 0.09, "surprise": 0.09, "fear": 0.09, "disgust": 0.09, "anger": 0.09,
    "contempt": 0.07,
    "au_combo": 0.14,
    "speech": 0.08,
}

# AU -> shapes that produce it (inverse of labels.AU_RULES; AU25 via a small jaw/lip opening).
AU_TO_SHAPES: dict[int, tuple[tuple[str, float], ...]] = {
    1: (("browInnerUp", 1.0),), 2: (("browOuterUp", 1.0),), 4: (("browDown", 1.0),),
    5: (("eyeWide", 1.0),), 6: (("cheekSquint", 0.6), ("cheekRaiser", 0.6)),
    7: (("eyeSquint", 1.0),), 9: (("noseSneer", 1.0),), 10: (("mouthUpperUp", 1.0),),
    12: (("mouthSmile", 1.0),), 14: (("mouthDimple", 1.0),), 15: (("mouthFrown", 1.0),),
    17: (("mouthShrugLower", 1.0), ("mouthShrugUpper", 0.3)), 20: (("mouthStretch", 1.0),),
    23: (("mouthRollUpper", 1.0), ("mouthRollLower", 1.0)), 24: (("mouthPress", 1.0),),
    25: (("mouthLowerDown", 0.8), ("jawOpen", 0.15)), 26: (("jawOpen", 1.0),),
    43: (("eyeBlink", 1.0),),
}

# Emotion prototype AU recipes after EMFACS (see train/synth/labels.py): each emotion has weighted
# variants; a variant lists AUs (always present when their probability is 1) and extra non-AU
# shapes (gaze). Typical intensity multipliers keep e.g. AU5 in surprise strong and AU26 in fear
# moderate. What real faces show and early recipes lacked (checked with MediaPipe on real photos,
# docs/synthetic.md): full smiles raise the cheeks and the upper lip; sadness narrows and lowers
# the eyes and the gaze, and crying squeezes them shut; anger narrows the eyes and is often shouted
# (upper lip up, mouth open); disgust narrows the eyes too.
AUEntry = tuple[int, float, float]  # (AU, probability, relative intensity)
ShapeEntry = tuple[str, float, float, float]  # (shape base name, probability, low, high)


@dataclass(frozen=True)
class Variant:
    weight: float
    aus: tuple[AUEntry, ...]
    shapes: tuple[ShapeEntry, ...] = ()


RECIPES: dict[str, tuple[Variant, ...]] = {
    "happy": (
        Variant(0.6, ((12, 1.0, 1.0), (6, 0.9, 0.85), (25, 0.6, 0.6), (10, 0.5, 0.45),
                      (26, 0.3, 0.4))),
        Variant(0.4, ((12, 1.0, 0.8), (6, 0.7, 0.6))),  # closed-mouth smile
    ),
    "sad": (
        Variant(0.5, ((1, 1.0, 0.9), (4, 0.8, 0.7), (15, 1.0, 0.9), (17, 0.5, 0.6),
                      (43, 0.4, 0.35), (7, 0.3, 0.4), (20, 0.2, 0.4)),
                (("eyeLookDown", 0.6, 0.1, 0.5),)),
        Variant(0.2, ((1, 1.0, 0.8), (15, 1.0, 1.0), (17, 0.7, 0.7), (43, 0.5, 0.4)),
                (("eyeLookDown", 0.7, 0.1, 0.6),)),
        # crying: inner brows up and drawn together, eyes squeezed shut, lips stretched sideways
        # and corners pulled down, the mouth open or pressed (the "cry face": AU1+4, AU6+7+43,
        # AU20, AU15, AU17/24 or AU25/26). The stretched lips are what a real-face model can
        # take for a smile, so the renders must show them.
        Variant(0.15, ((1, 1.0, 0.9), (4, 1.0, 0.8), (6, 0.8, 0.7), (7, 0.8, 0.7), (15, 1.0, 0.9),
                       (20, 0.9, 0.8), (43, 1.0, 0.9), (17, 0.4, 0.5), (25, 0.8, 0.6),
                       (26, 0.5, 0.4))),
        Variant(0.15, ((1, 1.0, 0.9), (4, 1.0, 0.8), (6, 0.8, 0.7), (7, 0.9, 0.8), (15, 0.9, 0.7),
                       (20, 1.0, 0.9), (43, 1.0, 0.9), (17, 0.8, 0.7), (24, 0.5, 0.6))),
    ),
    "surprise": (
        Variant(1.0, ((1, 1.0, 1.0), (2, 1.0, 1.0), (5, 0.8, 0.9), (26, 0.85, 0.9),
                      (25, 0.6, 0.5))),
    ),
    "fear": (
        Variant(1.0, ((1, 1.0, 0.9), (2, 0.9, 0.8), (4, 0.9, 0.7), (5, 0.9, 1.0), (20, 0.8, 0.8),
                      (7, 0.3, 0.5), (26, 0.6, 0.5), (25, 0.6, 0.5))),
    ),
    "disgust": (
        Variant(1.0, ((9, 0.8, 1.0), (10, 0.9, 0.9), (7, 0.5, 0.6), (4, 0.5, 0.5), (6, 0.4, 0.5),
                      (15, 0.4, 0.6), (17, 0.4, 0.6), (25, 0.4, 0.5))),
    ),
    "anger": (
        Variant(0.55, ((4, 1.0, 1.0), (7, 0.9, 0.8), (5, 0.4, 0.6), (23, 0.6, 0.8), (24, 0.6, 0.8),
                       (17, 0.4, 0.5))),
        # shouting: upper lip raised, mouth open
        Variant(0.45, ((4, 1.0, 1.0), (7, 0.9, 0.8), (5, 0.4, 0.6), (10, 1.0, 0.7),
                       (25, 1.0, 0.8), (26, 0.8, 0.6))),
    ),
}
# What a neutral face does without showing an emotion (the labeler keeps these neutral).
NEUTRAL_VARIETY: tuple[tuple[int, float, float, float], ...] = (
    # (AU, probability, low, high) as absolute 0..1 levels
    (25, 0.3, 0.2, 0.6), (26, 0.2, 0.1, 0.3), (7, 0.35, 0.1, 0.45), (43, 0.05, 0.6, 1.0),
)

# FACS-plausible AU groups for non-prototypic faces (frequent co-occurrences in BP4D/DISFA).
AU_GROUPS: tuple[tuple[int, ...], ...] = (
    (1,), (2,), (1, 2), (4,), (1, 4), (4, 7), (5,), (6,), (7,), (6, 7), (9,), (10,), (12,),
    (6, 12), (12, 25), (14,), (15,), (17,), (15, 17), (17, 24), (20,), (23,), (24,), (23, 24),
    (25,), (26,), (25, 26), (10, 25), (43,), (1, 2, 5), (4, 43), (12, 14), (6, 12, 25, 26),
)
SPEECH_SHAPES = ("jawOpen", "mouthFunnel", "mouthPucker", "mouthClose", "mouthLeft", "mouthRight",
                 "mouthRollLower", "mouthRollUpper", "mouthLowerDown", "mouthUpperUp",
                 "mouthShrugUpper", "cheekPuff", "jawLeft", "jawRight", "jawForward")
GAZE = ("eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp")


@dataclass
class Expression:
    weights: np.ndarray  # (K,) float32 in [0, 1], ICT order
    category: str  # what the sampler aimed for (labels are recomputed from weights)


class ExpressionSampler:
    """Draws :class:`Expression` values; stateless apart from the name table (rng passed in)."""

    def __init__(self, shape_names: Sequence[str],
                 category_probs: dict[str, float] | None = None) -> None:
        self.names = tuple(shape_names)
        self.index = {n: i for i, n in enumerate(self.names)}
        probs = dict(category_probs or CATEGORY_PROBS)
        unknown = set(probs) - set(CATEGORY_PROBS)
        if unknown:
            raise ValueError(f"unknown expression categories {sorted(unknown)}; "
                             f"expected a subset of {sorted(CATEGORY_PROBS)}")
        total = sum(probs.values())
        if total <= 0:
            raise ValueError(f"category probabilities must sum to > 0, got {total}")
        self.categories = list(probs)
        self.probs = np.asarray([probs[c] / total for c in self.categories])

    # ----------------------------------------------------------------------------- helpers
    def _add(self, w: np.ndarray, base: str, left: float, right: float | None = None) -> None:
        right = left if right is None else right
        if base in self.index:
            w[self.index[base]] += (left + right) / 2
            return
        w[self.index[f"{base}_L"]] += left
        w[self.index[f"{base}_R"]] += right

    def _add_au(self, w: np.ndarray, au: int, level: float, rng: np.random.Generator,
                asym: float, unilateral: str | None = None) -> None:
        """Activate one AU at ``level`` (0..1) with a left/right asymmetry factor."""
        for base, k in AU_TO_SHAPES[au]:
            lv = level * k
            left, right = lv * (1 + asym), lv * (1 - asym)
            if unilateral == "L":
                right = 0.0
            elif unilateral == "R":
                left = 0.0
            self._add(w, base, left, right)

    def _gaze(self, w: np.ndarray, rng: np.random.Generator) -> None:
        """Conjugate gaze (both eyes look the same way); it carries no AU label."""
        h = rng.normal(0, 0.25)
        v = rng.normal(0, 0.2)
        # looking to the subject's left: left eye looks out, right eye looks in
        self._add(w, "eyeLookOut", max(h, 0), max(-h, 0))
        self._add(w, "eyeLookIn", max(-h, 0), max(h, 0))
        self._add(w, "eyeLookUp", max(v, 0))
        self._add(w, "eyeLookDown", max(-v, 0))

    # ----------------------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> Expression:
        cat = self.categories[int(rng.choice(len(self.categories), p=self.probs))]
        w = np.zeros(len(self.names), np.float64)
        asym = float(np.clip(rng.normal(0, 0.12), -0.35, 0.35))
        if cat == "neutral":
            for au, p, lo, hi in NEUTRAL_VARIETY:
                if rng.random() < p:
                    self._add_au(w, au, float(rng.uniform(lo, hi)), rng, asym)
        elif cat in RECIPES:
            variants = RECIPES[cat]
            vw = np.asarray([v.weight for v in variants], np.float64)
            variant = variants[int(rng.choice(len(variants), p=vw / vw.sum()))]
            level = float(rng.uniform(0.35, 1.0))
            for au, p, rel in variant.aus:
                if rng.random() < p:
                    jitter = float(rng.uniform(0.75, 1.2))
                    self._add_au(w, au, min(1.0, level * rel * jitter), rng, asym)
            for base, p, lo, hi in variant.shapes:
                if rng.random() < p:
                    self._add(w, base, float(rng.uniform(lo, hi)))
        elif cat == "contempt":
            side = "L" if rng.random() < 0.5 else "R"
            level = float(rng.uniform(0.3, 0.9))
            if rng.random() < 0.8:
                self._add_au(w, 12, level, rng, 0.0, unilateral=side)
            self._add_au(w, 14, float(rng.uniform(0.3, 0.9)), rng, 0.0, unilateral=side)
        elif cat == "au_combo":
            for _ in range(int(rng.integers(1, 3))):
                group = AU_GROUPS[int(rng.integers(len(AU_GROUPS)))]
                uni = None if rng.random() > 0.15 else ("L" if rng.random() < 0.5 else "R")
                for au in group:
                    self._add_au(w, au, float(rng.uniform(0.1, 1.0)), rng, asym, unilateral=uni)
        elif cat == "speech":
            for _ in range(int(rng.integers(1, 4))):
                name = SPEECH_SHAPES[int(rng.integers(len(SPEECH_SHAPES)))]
                self._add(w, name, float(rng.uniform(0.1, 0.7)))
        # ambient muscle tone: a few shapes at sub-threshold levels, so "absent" is not "zero"
        for i in np.flatnonzero(rng.random(len(self.names)) < 0.12):
            w[i] += rng.uniform(0.0, 0.08)
        self._gaze(w, rng)
        if rng.random() < 0.04:  # spontaneous blink
            self._add(w, "eyeBlink", float(rng.uniform(0.6, 1.0)))
        return Expression(weights=np.clip(w, 0.0, 1.0).astype(np.float32), category=cat)
