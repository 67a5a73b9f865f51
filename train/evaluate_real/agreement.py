"""The label-free yardsticks: our AUs and emotions against MediaPipe's blendshapes (yardstick 1),
and how faithfully the normalized face keeps the expression (yardstick 2)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train import metrics as M
from train.evaluate_real.collect import MediaRecords
from train.evaluate_real.reference import BlendshapeReference, expression_blendshapes

MIN_PAIRS = 3  # fewer face-frames than this: every correlation is NaN
# A reference that barely moves (std below this, in FACS intensity units; 0.01 in blendshape units)
# gives a correlation of pure noise: such an AU is reported as "flat" with NaN correlations.
MIN_REF_STD = 0.05
MIN_BLEND_STD = 0.01


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman over the pairs where both values are finite.

    NaN (``null`` in JSON) means undefined: fewer than :data:`MIN_PAIRS` pairs, or one side
    constant (e.g. a blendshape MediaPipe never moved in that clip). ``n`` is always reported.
    """

    pearson: float
    spearman: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"pearson": self.pearson, "spearman": self.spearman, "n": self.n}


def correlate(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> Correlation:
    """Correlation of two equally long 1-D signals, dropping pairs with a NaN/inf on either side."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"correlate: x and y must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < MIN_PAIRS or np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
        return Correlation(math.nan, math.nan, n)
    from scipy import stats  # lazy: `python -m train --help` should not pay for scipy

    r = float(stats.pearsonr(a, b).statistic)
    rho = float(stats.spearmanr(a, b).statistic)
    return Correlation(_clip1(r), _clip1(rho), n)


def _clip1(v: float) -> float:
    return v if math.isnan(v) else min(1.0, max(-1.0, v))


def _nanmean(values: Iterable[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return float(v.mean()) if v.size else math.nan


@dataclass
class FaceArrays:
    """:class:`MediaRecords` as arrays (N face-frames); blendshapes (N, K), NaN where absent."""

    au_intensity: np.ndarray
    au_prob: np.ndarray
    emotion_prob: np.ndarray
    frame_blend: np.ndarray
    crop_blend: np.ndarray
    norm_blend: np.ndarray
    probed: np.ndarray
    ref_au: np.ndarray  # (N, A) reference AUs from the full-frame blendshapes
    ref_emotion: np.ndarray  # (N,) int, -1 ambiguous, -2 no blendshapes
    crop_au: np.ndarray  # reference AUs from I_o
    norm_au: np.ndarray  # reference AUs from I_n

    @classmethod
    def build(cls, records: Sequence[MediaRecords], names: Sequence[str],
              ref: BlendshapeReference | None) -> FaceArrays:
        a, e, k = len(AU_NAMES), len(EMOTION_NAMES), len(names)

        def stack(rows: list[np.ndarray], width: int) -> np.ndarray:
            # explicit row count: an item with no face (or no blendshape names) gives (0, width)
            if not rows:
                return np.zeros((0, width), np.float64)
            return np.asarray(rows, np.float64).reshape(len(rows), width)

        def blend(rows: list[dict[str, float] | None]) -> np.ndarray:
            return stack([np.array([d.get(n, np.nan) for n in names]) if d else np.full(k, np.nan)
                          for d in rows], k)

        def aus(rows: list[dict[str, float] | None]) -> np.ndarray:
            return stack([ref.intensities(d) if (d and ref) else np.full(a, np.nan)
                          for d in rows], a)

        fb = [d for r in records for d in r.frame_blend]
        cb = [d for r in records for d in r.crop_blend]
        nb = [d for r in records for d in r.norm_blend]
        return cls(
            au_intensity=stack([v for r in records for v in r.au_intensity], a),
            au_prob=stack([v for r in records for v in r.au_prob], a),
            emotion_prob=stack([v for r in records for v in r.emotion_prob], e),
            frame_blend=blend(fb), crop_blend=blend(cb), norm_blend=blend(nb),
            probed=np.asarray([p for r in records for p in r.probed], bool),
            ref_au=aus(fb),
            ref_emotion=np.asarray([ref.emotion(d) if (d and ref) else -2 for d in fb], np.int64),
            crop_au=aus(cb), norm_au=aus(nb),
        )


def au_agreement(fa: FaceArrays) -> dict[str, Any]:
    """Yardstick 1: our AU intensities against the MediaPipe-derived reference, per AU."""
    icc = M.icc31(fa.au_intensity, fa.ref_au) if len(fa.ref_au) else np.full(len(AU_NAMES), np.nan)
    mae = M.mae_per_au(fa.au_intensity, fa.ref_au) if len(fa.ref_au) \
        else np.full(len(AU_NAMES), np.nan)
    per_au: dict[str, Any] = {}
    for j, au in enumerate(AU_NAMES):
        ok = np.isfinite(fa.ref_au[:, j])
        ref_std = float(fa.ref_au[ok, j].std()) if ok.any() else math.nan
        flat = not ref_std >= MIN_REF_STD
        c = correlate(fa.au_intensity[:, j], fa.ref_au[:, j])
        cp = correlate(fa.au_prob[:, j], fa.ref_au[:, j])
        per_au[au] = {
            "pearson": math.nan if flat else c.pearson,
            "spearman": math.nan if flat else c.spearman, "n": c.n,
            "spearman_prob": math.nan if flat else cp.spearman,
            "icc31": math.nan if flat else float(icc[j]), "mae": float(mae[j]),
            "ours_mean": float(fa.au_intensity[ok, j].mean()) if ok.any() else math.nan,
            "ref_mean": float(fa.ref_au[ok, j].mean()) if ok.any() else math.nan,
            "ref_std": ref_std, "ref_flat": flat,
            "ref_active": float((fa.ref_au[ok, j] >= 1.0).mean()) if ok.any() else math.nan,
        }
    return {
        "n_faces": int(len(fa.au_intensity)),
        "per_au": per_au,
        "mean_pearson": _nanmean(v["pearson"] for v in per_au.values()),
        "mean_spearman": _nanmean(v["spearman"] for v in per_au.values()),
        "mean_icc31": _nanmean(v["icc31"] for v in per_au.values()),
    }


def emotion_agreement(fa: FaceArrays) -> dict[str, Any]:
    """Top emotion vs the EMFACS label of MediaPipe's blendshapes, where that is unambiguous."""
    labelled = fa.ref_emotion >= 0
    pred = fa.emotion_prob.argmax(1) if len(fa.emotion_prob) else np.zeros(0, np.int64)
    n = int(labelled.sum())
    return {
        "n_labelled": n,
        "n_ambiguous": int((fa.ref_emotion == -1).sum()),
        "accuracy": float((pred[labelled] == fa.ref_emotion[labelled]).mean()) if n else math.nan,
        "reference_counts": {e: int((fa.ref_emotion == i).sum())
                             for i, e in enumerate(EMOTION_NAMES)},
        "predicted_counts": {e: int((pred == i).sum()) for i, e in enumerate(EMOTION_NAMES)},
    }


def fidelity_metrics(fa: FaceArrays, names: Sequence[str]) -> dict[str, Any]:
    """Yardstick 2: MediaPipe on I_o vs on I_n (fidelity) and on the frame vs I_o (ceiling)."""
    probed = int(fa.probed.sum())
    crop_ok = fa.probed & np.isfinite(fa.crop_blend).all(1) if len(names) else fa.probed & False
    norm_ok = fa.probed & np.isfinite(fa.norm_blend).all(1) if len(names) else fa.probed & False
    relevant = set(expression_blendshapes(names))
    per: dict[str, Any] = {}
    for j, name in enumerate(names):
        if name == "_neutral":
            continue
        fid = correlate(fa.crop_blend[:, j], fa.norm_blend[:, j])
        ceil = correlate(fa.frame_blend[:, j], fa.crop_blend[:, j])
        both = np.isfinite(fa.crop_blend[:, j]) & np.isfinite(fa.norm_blend[:, j])
        seen = np.isfinite(fa.crop_blend[:, j])
        flat = not (float(fa.crop_blend[seen, j].std()) if seen.any() else 0.0) >= MIN_BLEND_STD
        if flat:  # MediaPipe never moved this shape on I_o: nothing to be faithful to
            fid = Correlation(math.nan, math.nan, fid.n)
            ceil = Correlation(math.nan, math.nan, ceil.n)
        per[name] = {**fid.to_dict(), "expression": name in relevant, "flat": flat,
                     "mean_abs_diff": float(np.abs(fa.crop_blend[both, j] - fa.norm_blend[both, j])
                                            .mean()) if both.any() else math.nan,
                     "ceiling_pearson": ceil.pearson, "ceiling_n": ceil.n}
    per_au: dict[str, Any] = {}
    for j, au in enumerate(AU_NAMES):
        seen = np.isfinite(fa.crop_au[:, j])
        flat = not (float(fa.crop_au[seen, j].std()) if seen.any() else 0.0) >= MIN_REF_STD
        fid = correlate(fa.crop_au[:, j], fa.norm_au[:, j])
        ceil = correlate(fa.ref_au[:, j], fa.crop_au[:, j])
        per_au[au] = {"pearson": math.nan if flat else fid.pearson,
                      "spearman": math.nan if flat else fid.spearman, "n": fid.n, "flat": flat,
                      "ceiling_pearson": math.nan if flat else ceil.pearson}
    expr = [v for v in per.values() if v["expression"]]
    return {
        "faces_probed": probed,
        "detect_rate_original": float(crop_ok.sum() / probed) if probed else math.nan,
        "detect_rate_normalized": float(norm_ok.sum() / probed) if probed else math.nan,
        "mean_expression_pearson": _nanmean(v["pearson"] for v in expr),
        "mean_expression_ceiling_pearson": _nanmean(v["ceiling_pearson"] for v in expr),
        "expression_blendshapes": sorted(relevant),
        "per_blendshape": per,
        "per_au": per_au,
        "mean_au_pearson": _nanmean(v["pearson"] for v in per_au.values()),
    }


def blendshape_names(records: Sequence[MediaRecords]) -> list[str]:
    """MediaPipe's category names, in the order of the first face that has them."""
    for r in records:
        for group in (r.frame_blend, r.crop_blend, r.norm_blend):
            for d in group:
                if d:
                    return list(d)
    return []


def summarize(records: Sequence[MediaRecords], fidelity: bool) -> dict[str, Any]:
    """Metrics of a group of media items (one item, or all of them pooled)."""
    names = blendshape_names(records)
    ref = BlendshapeReference(names) if names else None
    fa = FaceArrays.build(records, names, ref)
    out: dict[str, Any] = {"au_vs_mediapipe": au_agreement(fa), "emotion_vs_mediapipe":
                           emotion_agreement(fa)}
    out["normalization_fidelity"] = fidelity_metrics(fa, names) if fidelity else None
    return out
