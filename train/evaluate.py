"""Evaluation: predictions, benchmark metrics, MoE routing statistics, CV and cross-dataset reports.

Metrics are computed on whatever labels the test data has (NaN / -1 masked), so the same code
serves BP4D (12 AUs F1 + 5 AUs ICC), DISFA (8 + 12), AffectNet / RAF-DB (accuracy) and
cross-dataset tests (train on BP4D, test on DISFA: the shared AUs are the ones scored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from norface_rt.config import AU_NAMES, EMOTION_NAMES, ModelConfig
from train import metrics as M
from train.common import to_input
from train.data.sample import collate


@torch.no_grad()
def predict(normalizer: nn.Module | None, target_tokens: torch.Tensor, classifier: nn.Module,
            dataset: Dataset[Any], cfg: ModelConfig, batch_size: int = 32,
            device: torch.device | str = "cpu",
            target_image: torch.Tensor | None = None,
            pool: Any = None) -> dict[str, np.ndarray]:
    """Run F_nor + F_cla over the whole dataset in order; returns stacked outputs and targets.

    ``normalizer=None`` is the "w/o I_n" ablation: the original face feeds both branches.
    ``pool`` (a :class:`train.geometry.GeometryPool`) feeds models with a geometry input,
    deterministically (renders moved onto the pool's mean neutral face)."""
    from train.geometry import geometry_batch

    device = torch.device(device)
    if normalizer is not None:
        normalizer.eval()
    classifier.eval()
    n = len(dataset)  # type: ignore[arg-type]
    out: dict[str, list[np.ndarray]] = {}

    def add(k: str, v: torch.Tensor) -> None:
        out.setdefault(k, []).append(v.detach().float().cpu().numpy())

    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        x_o = to_input(batch, "image", cfg, device)
        x_n = x_o if normalizer is None else normalizer(x_o, target_tokens, target_image)
        geo = None if pool is None else geometry_batch(batch, pool, random=False).to(device)
        o = classifier(x_n, x_o, geo)
        add("au_prob", torch.sigmoid(o.au_logits))
        if o.emotion_logits_geometry is not None and o.emotion_logits_fused is not None:
            add("emotion_prob_fused", torch.softmax(o.emotion_logits_fused, -1))
            add("emotion_prob_geometry", torch.softmax(o.emotion_logits_geometry, -1))
        add("au_intensity", o.au_intensity)
        add("emotion_prob", torch.softmax(o.emotion_logits, -1))
        add("gates_output", o.moe_output.gates)
        add("gates_normalized", o.moe_normalized.gates)
        add("gates_original", o.moe_original.gates)
        add("t_occ", batch["au_occurrence"])
        add("t_int", batch["au_intensity"])
        out.setdefault("t_emo", []).append(batch["emotion"].numpy())
    if not out:
        raise ValueError("predict: empty dataset")
    return {k: np.concatenate(v) for k, v in out.items()}


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def compute_metrics(p: Mapping[str, np.ndarray], threshold: float = 0.5) -> dict[str, Any]:
    """Benchmark metrics over the labels present; per-AU entries only for labelled AUs."""
    res: dict[str, Any] = {"n": int(len(p["t_emo"]))}
    f1 = M.f1_per_au(p["au_prob"], p["t_occ"], threshold)
    if np.any(~np.isnan(f1)):
        res["au_f1"] = {AU_NAMES[i]: float(v) for i, v in enumerate(f1) if not math.isnan(v)}
        res["au_f1_mean"] = float(np.nanmean(f1))
    icc = M.icc31(p["au_intensity"], p["t_int"])
    mse = M.mse_per_au(p["au_intensity"], p["t_int"])
    mae = M.mae_per_au(p["au_intensity"], p["t_int"])
    if np.any(~np.isnan(mse)):
        lab = [i for i in range(len(AU_NAMES)) if not math.isnan(mse[i])]
        res["au_icc"] = {AU_NAMES[i]: _finite(float(icc[i])) for i in lab}
        res["au_mse"] = {AU_NAMES[i]: float(mse[i]) for i in lab}
        res["au_mae"] = {AU_NAMES[i]: float(mae[i]) for i in lab}
        res["au_icc_mean"] = _finite(float(np.nanmean(icc[lab]))) if np.any(~np.isnan(icc[lab])) else None
        res["au_mse_mean"] = float(np.mean(mse[lab]))
        res["au_mae_mean"] = float(np.mean(mae[lab]))
    if np.any(p["t_emo"] >= 0):
        pred = p["emotion_prob"].argmax(1)
        cm = M.confusion_matrix(pred, p["t_emo"], len(EMOTION_NAMES))
        res["emotion_accuracy"] = M.accuracy(pred, p["t_emo"])
        res["emotion_mean_class_accuracy"] = M.mean_class_accuracy(cm)
        res["emotion_confusion"] = cm.tolist()
        for readout in ("fused", "geometry"):
            k = f"emotion_prob_{readout}"
            if k in p:
                pr = p[k].argmax(1)
                res[f"emotion_accuracy_{readout}"] = M.accuracy(pr, p["t_emo"])
                res[f"emotion_mean_class_accuracy_{readout}"] = M.mean_class_accuracy(
                    M.confusion_matrix(pr, p["t_emo"], len(EMOTION_NAMES)))
    return res


def routing_stats(gates: np.ndarray, t_occ: np.ndarray, t_emo: np.ndarray) -> dict[str, Any]:
    """Mean output-MoE gate vector per label: which experts serve which AU / emotion.

    A label's row averages the gates of the samples where that AU occurs (or that emotion is the
    label); rows with no sample are omitted.
    """
    rows: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for i, name in enumerate(AU_NAMES):
        m = t_occ[:, i] == 1
        if m.any():
            rows[name] = gates[m].mean(0).tolist()
            counts[name] = int(m.sum())
    for c, name in enumerate(EMOTION_NAMES):
        m = t_emo == c
        if m.any():
            rows[name] = gates[m].mean(0).tolist()
            counts[name] = int(m.sum())
    return {"experts": int(gates.shape[1]), "mean_gates": rows, "counts": counts,
            "overall": gates.mean(0).tolist() if len(gates) else []}


def plot_routing(stats: Mapping[str, Any], path: str | Path,
                 title: str = "output MoE routing") -> Path | None:
    """Heatmap PNG (labels x experts). Returns None when there is nothing to plot."""
    rows = stats["mean_gates"]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    mat = np.asarray([rows[n] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * mat.shape[1], 0.8 + 0.32 * len(names)))
    im = ax.imshow(mat, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(mat.max())), aspect="auto")
    ax.set_xticks(range(mat.shape[1]), [f"E{i}" for i in range(mat.shape[1])])
    ax.set_yticks(range(len(names)), [f"{n} ({stats['counts'][n]})" for n in names])
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="mean gate")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


SUMMARY_KEYS = ("au_f1_mean", "au_icc_mean", "au_mse_mean", "au_mae_mean", "emotion_accuracy",
                "emotion_mean_class_accuracy")


def average_folds(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over folds of every summary number and every per-AU number (the 3-fold CV result)."""
    avg: dict[str, Any] = {"folds": len(folds)}
    for k in SUMMARY_KEYS:
        vals = [f[k] for f in folds if f.get(k) is not None]
        if vals:
            avg[k] = float(np.mean(vals))
    for k in ("au_f1", "au_icc", "au_mse", "au_mae"):
        names = sorted({n for f in folds for n in f.get(k, {})}, key=AU_NAMES.index)
        if names:
            avg[k] = {n: float(np.mean([f[k][n] for f in folds if f.get(k, {}).get(n) is not None]))
                      for n in names if any(f.get(k, {}).get(n) is not None for f in folds)}
    return avg


def markdown_report(title: str, results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables: per-AU F1 / ICC and summary rows, one column per result (fold, average)."""
    lines = [f"# {title}", ""]
    cols = list(results)
    for key, label in (("au_f1", "AU F1"), ("au_icc", "AU ICC(3,1)"), ("au_mae", "AU MAE")):
        names = sorted({n for r in results.values() for n in r.get(key, {})}, key=AU_NAMES.index)
        if not names:
            continue
        lines += [f"## {label}", "", "| AU | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for n in names:
            cells = [results[c].get(key, {}).get(n) for c in cols]
            lines.append(f"| {n} | " + " | ".join("-" if v is None else f"{100 * v:.1f}" if key == "au_f1"
                                                 else f"{v:.3f}" for v in cells) + " |")
        lines.append("")
    lines += ["## Summary", "", "| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in SUMMARY_KEYS:
        vals = [results[c].get(k) for c in cols]
        if any(v is not None for v in vals):
            lines.append(f"| {k} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"
