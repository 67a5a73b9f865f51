"""MediaPipe blendshape scores -> reference AU intensities and emotion, through the rules that
label the synthetic training data (:mod:`train.synth.labels`, docs/au_mapping.md), so a reference
means exactly what the model was trained to output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from train.synth.labels import AU_RULES, AULabeler

# Shapes the AU rules read that exist in ICT-FaceKit but not in ARKit/MediaPipe; they enter as 0.
ICT_ONLY_SHAPES: tuple[str, ...] = ("cheekRaiser",)


def ict_name(mediapipe_name: str) -> str:
    """MediaPipe spells sides ``mouthSmileLeft``, ICT/ARKit-in-ICT ``mouthSmile_L``."""
    if mediapipe_name.endswith("Left"):
        return mediapipe_name[:-4] + "_L"
    if mediapipe_name.endswith("Right"):
        return mediapipe_name[:-5] + "_R"
    return mediapipe_name


def expression_blendshapes(mediapipe_names: Sequence[str]) -> tuple[str, ...]:
    """The MediaPipe blendshapes some AU rule reads (gaze, cheekPuff, _neutral... are not)."""
    bases = {base for rule in AU_RULES for base, _ in rule.shapes}
    return tuple(n for n in mediapipe_names if ict_name(n).removesuffix("_L").removesuffix("_R")
                 in bases)


class BlendshapeReference:
    """MediaPipe blendshape scores -> reference AU intensities and emotion.

    Uses :class:`train.synth.labels.AULabeler`, the code that labels the synthetic training data,
    so the reference means exactly what the model was trained to output. Shapes the rules read but
    MediaPipe lacks (ICT's ``cheekRaiser``) enter as 0 and are listed in :attr:`missing`.
    """

    def __init__(self, mediapipe_names: Sequence[str]) -> None:
        self.mediapipe_names = tuple(mediapipe_names)
        names = [ict_name(n) for n in self.mediapipe_names]
        have = set(names)
        self.missing: list[str] = []
        for rule in AU_RULES:
            for base, _ in rule.shapes:
                if base in have or (f"{base}_L" in have and f"{base}_R" in have):
                    continue
                if base not in self.missing:
                    self.missing.append(base)
        unknown = [b for b in self.missing if b not in ICT_ONLY_SHAPES]
        if unknown:
            raise ValueError(f"blendshape names lack {unknown} (each as a midline name or a "
                             f"Left/Right pair, MediaPipe spelling); got {len(names)} names")
        self._pad = 2 * len(self.missing)
        self._labeler = AULabeler(names + [f"{b}_{s}" for b in self.missing for s in "LR"])

    def weights(self, blendshapes: Mapping[str, float]) -> np.ndarray:
        lacking = [n for n in self.mediapipe_names if n not in blendshapes]
        if lacking:
            raise ValueError(f"blendshapes: missing {lacking[:5]} (expected the "
                             f"{len(self.mediapipe_names)} MediaPipe categories)")
        w = np.array([blendshapes[n] for n in self.mediapipe_names] + [0.0] * self._pad, np.float64)
        return np.clip(np.nan_to_num(w), 0.0, 1.0)

    def intensities(self, blendshapes: Mapping[str, float]) -> np.ndarray:
        """(A,) FACS intensities in [0, 5], order of AU_NAMES."""
        return self._labeler.intensities(self.weights(blendshapes))

    def emotion(self, blendshapes: Mapping[str, float]) -> int:
        """Index into EMOTION_NAMES, -1 for ambiguous/non-prototypic."""
        return self._labeler.emotion(self.weights(blendshapes))

