"""What MediaPipe sees on the renders and on real faces: the number a generator change must move.

MediaPipe's face landmarker (trained on real faces) reads 51 expressive blendshapes on every face.
Read on the synthetic renders (``mp_blendshapes`` of the shards: MediaPipe on the full render) and
on labelled real faces (the same landmarker, image mode, the largest face of each image), they show
how the renders' expressions differ from real ones:

* class means of every blendshape per domain (renders vs each real set);
* the transfer score: a logistic regression on the renders' blendshapes (standardised, classes
  balanced) with their emotion labels, scored on each real set. If renders showed expressions as
  real faces do, a classifier of the renders' geometry would read real faces too. Balanced
  accuracy on the real sets is the figure each generator change is measured by.

Only faces MediaPipe found enter (a face it misses has no blendshapes, and whether it is missed
does not depend on the generator). Renders labelled -1 (ambiguous), or outside ``classes``
(contempt by default), or whose render MediaPipe did not find (NaN), are left out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import EMOTION_NAMES
from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES
from train.evaluate_real.collect import StillRecords
from train.evaluate_real.scoring import classification_scores

# The subset the markdown table shows (left side), as issue 10's table; JSON has all 51.
SUMMARY_BLENDSHAPES: tuple[str, ...] = ("browDownLeft", "browInnerUp", "browOuterUpLeft",
                                        "eyeSquintLeft", "eyeBlinkLeft", "mouthSmileLeft",
                                        "mouthUpperUpLeft", "jawOpen")
RENDERS = "renders"


@dataclass
class BlendshapeSet:
    """Blendshape vectors (N, 51) in :data:`MEDIAPIPE_BLENDSHAPES` order (NaN rows: no face) with
    their class names (None: not a scored class)."""

    name: str
    x: np.ndarray
    labels: list[str | None]
    n_no_face: int = 0
    n_left_out: int = 0
    path: str = ""

    def usable(self) -> np.ndarray:
        return np.isfinite(self.x).all(1) & np.asarray([lab is not None for lab in self.labels],
                                                       bool)


def load_renders(shard_dir: str | os.PathLike[str], classes: Sequence[str]) -> BlendshapeSet:
    """``mp_blendshapes`` and ``emotion`` of every sample of a shard folder."""
    from train.data.shards import ShardDataset, ShardError

    d = Path(shard_dir).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"--renders: no such folder: {d}")
    ds = ShardDataset(d)
    if not ds.has_column("mp_blendshapes"):
        raise ShardError(f"--renders {d}: the shards carry no mp_blendshapes (generate them with "
                         "python -m train.synth generate --landmarker face_landmarker_v2_with_"
                         "blendshapes.task)")
    names = ds.meta.get("mp_blendshape_names", list(MEDIAPIPE_BLENDSHAPES))
    if list(names) != list(MEDIAPIPE_BLENDSHAPES):
        raise ShardError(f"--renders {d}: meta.json mp_blendshape_names differ from MediaPipe's "
                         f"{len(MEDIAPIPE_BLENDSHAPES)} expressive blendshapes")
    x = ds.column("mp_blendshapes").astype(np.float64)
    emo = ds.column("emotion").astype(np.int64)
    if x.ndim != 2 or x.shape[1] != len(MEDIAPIPE_BLENDSHAPES):
        raise ShardError(f"--renders {d}: mp_blendshapes must be (N, {len(MEDIAPIPE_BLENDSHAPES)}), "
                         f"got {x.shape}")
    labels: list[str | None] = [EMOTION_NAMES[e] if 0 <= e < len(EMOTION_NAMES)
                                and EMOTION_NAMES[e] in classes else None for e in emo]
    no_face = ~np.isfinite(x).all(1)
    out = BlendshapeSet(RENDERS, x, labels, n_no_face=int(no_face.sum()),
                        n_left_out=int(sum(lab is None for lab in labels)), path=str(d))
    present = {lab for lab, u in zip(labels, out.usable()) if u and lab is not None}
    if len(present) < 2:
        raise ValueError(f"--renders {d}: need renders of at least two of the classes "
                         f"{', '.join(classes)} that MediaPipe found, got {sorted(present)} "
                         f"({int(out.usable().sum())} usable of {len(labels)})")
    return out


def real_set(name: str, rec: StillRecords, labels: Sequence[str]) -> BlendshapeSet:
    """MediaPipe's reading of the largest face of each scored real image."""
    from norface_rt.faces.geometry import blendshape_vector

    x = np.full((len(rec), len(MEDIAPIPE_BLENDSHAPES)), np.nan)
    for i, d in enumerate(rec.blendshapes):
        if d:
            x[i] = blendshape_vector(d, MEDIAPIPE_BLENDSHAPES)
    return BlendshapeSet(name, x, list(labels), n_no_face=int((~rec.has_face & rec.readable).sum()))


def class_means(sets: Sequence[BlendshapeSet], classes: Sequence[str]) -> dict[str, Any]:
    """domain -> class -> {n, mean: {blendshape: value}} over usable faces."""
    out: dict[str, Any] = {}
    for s in sets:
        ok = s.usable()
        labels = np.asarray([lab or "" for lab in s.labels])
        per: dict[str, Any] = {}
        for c in classes:
            m = ok & (labels == c)
            if m.any():
                per[c] = {"n": int(m.sum()),
                          "mean": dict(zip(MEDIAPIPE_BLENDSHAPES, s.x[m].mean(0).tolist()))}
        out[s.name] = per
    return out


def transfer(renders: BlendshapeSet, reals: Sequence[BlendshapeSet],
             classes: Sequence[str]) -> dict[str, Any]:
    """Logistic regression on the renders' blendshapes, scored on each real set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ok = renders.usable()
    y = np.asarray([classes.index(lab) for lab, u in zip(renders.labels, ok) if u], np.int64)
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise ValueError(f"renders: need at least two classes to train on, got "
                         f"{[classes[i] for i in present]}")
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(class_weight="balanced", max_iter=5000))
    clf.fit(renders.x[ok], y)
    per_set: dict[str, Any] = {}
    for s in reals:
        m = s.usable()
        true = np.asarray([classes.index(lab) for lab, u in zip(s.labels, m) if u], np.int64)
        pred = clf.predict(s.x[m]) if m.any() else np.zeros(0, np.int64)
        sc = classification_scores(true, pred, classes)
        per_set[s.name] = {"n": sc["n"], "n_no_face": s.n_no_face,
                           "accuracy": sc["accuracy"],
                           "balanced_accuracy": sc["balanced_accuracy"],
                           "per_class_recall": {c: v["recall"] for c, v in sc["per_class"].items()},
                           "confusion": sc["confusion"]}
    return {"model": "StandardScaler + LogisticRegression(class_weight='balanced')",
            "features": len(MEDIAPIPE_BLENDSHAPES),
            "trained_on": {"n": int(ok.sum()),
                           "classes": {classes[i]: int((y == i).sum()) for i in present}},
            "per_set": per_set}


def render_gap(renders: BlendshapeSet, reals: Sequence[BlendshapeSet],
               classes: Sequence[str]) -> dict[str, Any]:
    """Both statistics for the renders (:func:`load_renders`) against the real sets."""
    if not reals:
        raise ValueError("--renders needs real faces to compare with: --labelled DIR and/or "
                         "--london")
    return {
        "renders": {"path": renders.path, "n": len(renders.labels),
                    "n_no_face": renders.n_no_face, "n_left_out": renders.n_left_out,
                    "n_usable": int(renders.usable().sum())},
        "real_sets": [{"name": s.name, "n": len(s.labels), "n_no_face": s.n_no_face,
                       "n_usable": int(s.usable().sum())} for s in reals],
        "classes": list(classes),
        "summary_blendshapes": list(SUMMARY_BLENDSHAPES),
        "class_means": class_means([renders, *reals], classes),
        "transfer": transfer(renders, reals, classes),
    }
