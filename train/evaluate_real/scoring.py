"""Scores of labelled predictions, with their undefined cases made explicit.

Conventions every labelled section of the report shares:

* A face not found is a prediction of its own, ``"none"`` (:data:`NO_FACE`), and always wrong:
  a tool that misses faces must not look better for it. It has a column in the confusion matrix.
* Balanced accuracy is the mean recall over the classes that occur among the true labels; a class
  with no image has no recall (``None``), not a recall of 0.
* An AUC is undefined (``None``) when one side is empty; non-finite scores are dropped first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

NO_FACE = "none"


def restricted_argmax(prob: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(N,) position in ``columns`` of each row's most probable of those columns; -1 for a row
    without outputs (NaN: no face). Classes outside ``columns`` cannot win (e.g. contempt when a
    set has no contempt images)."""
    p = np.asarray(prob, np.float64)
    if p.ndim != 2:
        raise ValueError(f"prob must be (N, E), got shape {p.shape}")
    if not columns:
        raise ValueError("columns: expected at least one class column")
    sub = p[:, list(columns)]
    ok = np.isfinite(sub).all(1)
    out = np.full(len(p), -1, np.int64)
    if ok.any():
        out[ok] = sub[ok].argmax(1)
    return out


def classification_scores(true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray,
                          classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class recall and the confusion matrix.

    ``true``: indices into ``classes``; ``pred``: indices into ``classes``, or -1 for no face.
    The matrix has one row per class (true) and one column per class plus ``"none"``.
    """
    from sklearn.metrics import confusion_matrix

    t = np.asarray(true, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    k = len(classes)
    if t.shape != p.shape:
        raise ValueError(f"true and pred must have the same length, got {t.size} and {p.size}")
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"true labels must lie in [0, {k}), got [{t.min()}, {t.max()}]")
    if p.size and (p.min() < -1 or p.max() >= k):
        raise ValueError(f"predictions must lie in [-1, {k}), got [{p.min()}, {p.max()}]")
    p_col = np.where(p < 0, k, p)
    cm = (confusion_matrix(t, p_col, labels=list(range(k + 1)))[:k] if t.size
          else np.zeros((k, k + 1), np.int64))
    support = cm.sum(1)
    recall = [float(cm[i, i] / support[i]) if support[i] else None for i in range(k)]
    present = [r for r in recall if r is not None]
    n = int(t.size)
    return {
        "n": n,
        "n_no_face": int((p < 0).sum()),
        "accuracy": float(np.trace(cm[:, :k]) / n) if n else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "per_class": {c: {"n": int(support[i]), "recall": recall[i],
                          "no_face": int(cm[i, k])} for i, c in enumerate(classes)},
        "confusion": {"rows": list(classes), "columns": [*classes, NO_FACE],
                      "matrix": cm.astype(int).tolist()},
    }


def auc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray
        ) -> float | None:
    """Area under the ROC curve of ``scores`` separating ``positive`` from the rest (ties count
    one half); None when either side is empty after dropping non-finite scores."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(positive, bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and positive must have the same length, got {s.size} and {y.size}")
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    if not y.any() or y.all():
        return None
    return float(roc_auc_score(y, s))


def fraction(mask: Sequence[bool] | np.ndarray) -> float | None:
    """Share of True; None for an empty selection (not 0: nothing was measured)."""
    m = np.asarray(mask, bool).ravel()
    return float(m.mean()) if m.size else None


def finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)
