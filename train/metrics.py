"""Evaluation metrics of the AU / emotion benchmarks, NaN- and -1-aware.

The benchmarks report per-AU F1 (BP4D, DISFA detection), ICC(3,1) and MSE/MAE (intensity) and
accuracy (AffectNet, RAF-DB). Labels follow the common sample format: AU targets are NaN where the
source has no label and emotion targets are -1 where unknown, so every metric here ignores those
entries instead of counting them as negatives. Pure numpy: evaluation needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _as_2d(name: str, a: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, A) or (N,), got shape {arr.shape}")
    return arr


def _check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} must equal target shape {target.shape}")


def binary_counts(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float],
                  threshold: float = 0.5) -> dict[str, np.ndarray]:
    """TP/FP/FN/TN per column over entries whose target is labelled (not NaN).

    ``pred`` holds probabilities or {0,1}; ``pred >= threshold`` is a positive prediction.
    """
    p = _as_2d("pred", pred)
    t = _as_2d("target", target)
    _check_same_shape(p, t)
    valid = ~np.isnan(t)
    pos_pred = (p >= threshold) & valid
    pos_true = (t >= 0.5) & valid
    tp = (pos_pred & pos_true).sum(0)
    fp = (pos_pred & ~pos_true & valid).sum(0)
    fn = (~pos_pred & pos_true & valid).sum(0)
    tn = (~pos_pred & ~pos_true & valid).sum(0)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "n": valid.sum(0)}


def f1_per_au(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float],
              threshold: float = 0.5, zero_division: float = 0.0) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) per AU column.

    NaN for a column with no labelled entry at all (the AU is not part of that dataset), so a
    dataset's mean F1 is not dragged down by AUs it never annotated. ``zero_division`` is used when
    a labelled column has neither true nor predicted positives (sklearn's convention).
    """
    c = binary_counts(pred, target, threshold)
    denom = 2 * c["tp"] + c["fp"] + c["fn"]
    out = np.full(denom.shape, np.nan, dtype=np.float64)
    labelled = c["n"] > 0
    ok = labelled & (denom > 0)
    out[ok] = 2.0 * c["tp"][ok] / denom[ok]
    out[labelled & (denom == 0)] = zero_division
    return out


def mean_f1(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float],
            threshold: float = 0.5) -> float:
    """Average F1 over the AUs that have labels (the benchmark 'Avg.' column)."""
    f1 = f1_per_au(pred, target, threshold)
    return float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else math.nan


def icc31(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float]) -> np.ndarray:
    """ICC(3,1) (Shrout & Fleiss 1979, two-way mixed, consistency, single rater) per column.

    The two 'raters' are prediction and ground truth; rows with a NaN target are dropped per
    column. ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS) with k = 2. NaN where fewer than two
    labelled rows exist or the denominator is zero (constant columns).
    """
    p = _as_2d("pred", pred)
    t = _as_2d("target", target)
    _check_same_shape(p, t)
    out = np.full(p.shape[1], np.nan, dtype=np.float64)
    k = 2
    for j in range(p.shape[1]):
        m = ~np.isnan(t[:, j]) & ~np.isnan(p[:, j])
        n = int(m.sum())
        if n < 2:
            continue
        y = np.stack([p[m, j], t[m, j]], axis=1)  # (n, k)
        grand = y.mean()
        ss_total = ((y - grand) ** 2).sum()
        ss_rows = k * ((y.mean(1) - grand) ** 2).sum()
        ss_cols = n * ((y.mean(0) - grand) ** 2).sum()
        ss_err = ss_total - ss_rows - ss_cols
        bms = ss_rows / (n - 1)
        ems = ss_err / ((n - 1) * (k - 1))
        denom = bms + (k - 1) * ems
        if denom > 0:
            out[j] = (bms - ems) / denom
    return out


def mse_per_au(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float]) -> np.ndarray:
    """Mean squared error per column over labelled entries (NaN for an unlabelled column)."""
    return _masked_mean_err(pred, target, squared=True)


def mae_per_au(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float]) -> np.ndarray:
    """Mean absolute error per column over labelled entries (NaN for an unlabelled column)."""
    return _masked_mean_err(pred, target, squared=False)


def _masked_mean_err(pred: np.ndarray | Sequence[float], target: np.ndarray | Sequence[float],
                     squared: bool) -> np.ndarray:
    p = _as_2d("pred", pred)
    t = _as_2d("target", target)
    _check_same_shape(p, t)
    valid = ~np.isnan(t)
    err = np.where(valid, p - np.nan_to_num(t), 0.0)
    err = err ** 2 if squared else np.abs(err)
    n = valid.sum(0)
    out = np.full(p.shape[1], np.nan, dtype=np.float64)
    out[n > 0] = err.sum(0)[n > 0] / n[n > 0]
    return out


def _labels(name: str, a: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}")
    return arr.astype(np.int64)


def confusion_matrix(pred: np.ndarray | Sequence[int], target: np.ndarray | Sequence[int],
                     num_classes: int) -> np.ndarray:
    """Counts C[true, predicted]; targets of -1 (unknown / ambiguous) are skipped."""
    p = _labels("pred", pred)
    t = _labels("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} must equal target shape {t.shape}")
    m = t >= 0
    if np.any(t[m] >= num_classes) or np.any((p[m] < 0) | (p[m] >= num_classes)):
        raise ValueError(f"class indices must lie in [0, num_classes={num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t[m], p[m]), 1)
    return cm


def accuracy(pred: np.ndarray | Sequence[int], target: np.ndarray | Sequence[int]) -> float:
    """Fraction of labelled samples (target >= 0) predicted correctly; NaN when none is labelled."""
    p = _labels("pred", pred)
    t = _labels("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} must equal target shape {t.shape}")
    m = t >= 0
    if not m.any():
        return math.nan
    return float((p[m] == t[m]).mean())


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Average per-class recall over classes that occur (the 'balanced accuracy' some papers use)."""
    support = cm.sum(1)
    ok = support > 0
    if not ok.any():
        return math.nan
    return float((np.diag(cm)[ok] / support[ok]).mean())
