"""The report's files: report.md, faces.csv and the plots (report.json is the dict itself)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES, ModelConfig
from train.evaluate_real.agreement import MIN_REF_STD, blendshape_names
from train.evaluate_real.collect import MediaItem, MediaRecords, StillRecords
from train.evaluate_real.labelled import reference_aus
from train.evaluate_real.reference import BlendshapeReference
from train.evaluate_real.scoring import NO_FACE
from train.evaluate_real.tables import (
    fmt,
    labelled_markdown,
    london_markdown,
    render_gap_markdown,
    segments_markdown,
)

# The plot prefers this clip when it is among the media (a woman acting strong expressions).
PREFERRED_PLOT_VIDEO = "WolfgangLanger_Pexels.mp4"
PLOT_AUS: tuple[str, ...] = ("AU01", "AU04", "AU06", "AU12", "AU15", "AU25", "AU26")


def pick_plot_video(items: Sequence[MediaItem],
                    plot_video: str | os.PathLike[str] | None) -> MediaItem | None:
    """``plot_video`` when given, else the preferred clip if listed, else the first video."""
    if plot_video is not None:
        p = Path(plot_video).expanduser()
        for it in items:
            if it.kind == "video" and it.path.resolve() == p.resolve():
                return it
        raise ValueError(f"--plot-video {p} is not one of the --media videos "
                         f"({[str(i.path) for i in items if i.kind == 'video']})")
    videos = [it for it in items if it.kind == "video"]
    for it in videos:
        if it.path.name == PREFERRED_PLOT_VIDEO:
            return it
    return videos[0] if videos else None


def plot_timeseries(rec: MediaRecords, path: Path, *, model_id: str, trained: bool) -> Path:
    """Emotion probabilities, AU intensities and their MediaPipe references over time, PNG.

    One face per frame (the largest): a second person would otherwise interleave. Frames without
    a face are gaps. Uses the Agg canvas directly, so no global pyplot state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best = rec.largest_per_frame()
    rows = [best[fi] for fi in sorted(best)]
    t = np.asarray([rec.time_s[i] for i in rows], np.float64)
    emo = np.asarray([rec.emotion_prob[i] for i in rows], np.float64)
    emo = emo.reshape(-1, len(EMOTION_NAMES))
    cols = [AU_NAMES.index(a) for a in PLOT_AUS]
    ours = np.asarray([rec.au_intensity[i][cols] for i in rows], np.float64).reshape(-1, len(cols))
    theirs = reference_aus([rec.frame_blend[i] for i in rows])[:, cols].reshape(-1, len(cols))
    if t.size > 1:  # break lines across frames without a face
        step = np.median(np.diff(t))
        gaps = np.nonzero(np.diff(t) > 1.5 * step)[0]
        t = np.insert(t, gaps + 1, t[gaps] + step)
        emo = np.insert(emo, gaps + 1, np.nan, axis=0)
        ours = np.insert(ours, gaps + 1, np.nan, axis=0)
        theirs = np.insert(theirs, gaps + 1, np.nan, axis=0)

    fig = Figure(figsize=(12, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_e, ax_a, ax_r = fig.subplots(3, 1, sharex=True)
    emo_colors = [f"C{i}" for i in range(len(EMOTION_NAMES))]
    for k, e in enumerate(EMOTION_NAMES):
        ax_e.plot(t, emo[:, k], color=emo_colors[k], lw=1.2, label=e)
    ax_e.set_ylim(0, 1)
    ax_e.set_ylabel("emotion probability")
    ax_e.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    for k, au in enumerate(PLOT_AUS):
        ax_a.plot(t, ours[:, k], color=f"C{k}", lw=1.2, label=au)
        ax_r.plot(t, theirs[:, k], color=f"C{k}", lw=1.2, label=au)
    ax_a.set_ylabel("AU intensity (ours)")
    ax_r.set_ylabel("AU from MediaPipe\nblendshapes")
    for ax in (ax_a, ax_r):
        ax.set_ylim(0, 5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax_r.set_xlabel("time (s)")
    state = "trained" if trained else "UNTRAINED (outputs are random)"
    fig.suptitle(f"{model_id} - {state}\n{rec.item.path.name}: {rec.frames} frames, "
                 f"{rec.frames_with_face} with a face (largest face shown)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path


def plot_confusion(confusion: Mapping[str, Any], path: Path, *, title: str) -> Path:
    """Confusion matrix as a heat map: counts written in each cell, colours normalised per row
    (the share of a true class read as each prediction), so small classes stay readable."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, cols = list(confusion["rows"]), list(confusion["columns"])
    cm = np.asarray(confusion["matrix"], np.float64).reshape(len(rows), len(cols))
    support = cm.sum(1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    fig = Figure(figsize=(1.0 + 0.85 * len(cols), 1.2 + 0.7 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for r in range(len(rows)):
        for c in range(len(cols)):
            ax.text(c, r, str(int(cm[r, c])), ha="center", va="center", fontsize=9,
                    color="white" if share[r, c] > 0.55 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r} (n={int(support[i, 0])})" for i, r in enumerate(rows)])
    ax.set_xlabel("predicted (none = no face found)")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png")
    return path


# ---- report -------------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    """NaN/inf -> null (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


_f = fmt


def write_faces_csv(records: Sequence[MediaRecords], path: Path) -> Path:
    """One row per face-frame (ours and the reference), for re-analysis without re-running."""
    names = blendshape_names(records)
    ref = BlendshapeReference(names) if names else None
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["media", "frame_index", "time_s", "track_id", "top_emotion", "ref_emotion",
                    *AU_NAMES, *(f"ref_{a}" for a in AU_NAMES)])
        for r in records:
            for i in range(len(r)):
                d = r.frame_blend[i]
                ra = ref.intensities(d) if (ref and d) else np.full(len(AU_NAMES), np.nan)
                re_ = ref.emotion(d) if (ref and d) else -2
                w.writerow([r.item.name, r.frame_index[i], f"{r.time_s[i]:.4f}", r.track_id[i],
                            EMOTION_NAMES[int(np.argmax(r.emotion_prob[i]))],
                            EMOTION_NAMES[re_] if re_ >= 0 else ("ambiguous" if re_ == -1 else ""),
                            *(f"{v:.4f}" for v in r.au_intensity[i]), *(f"{v:.4f}" for v in ra)])
    return path


def write_images_csv(sets: Sequence[tuple[str, StillRecords, Sequence[str], np.ndarray,
                                           Sequence[str]]],
                     cfg: ModelConfig, path: Path) -> Path:
    """One row per labelled still (set, file, label, top emotion among the scored classes or
    none, every emotion probability and AU intensity, MediaPipe's reference AUs, and each
    teacher's top emotion where teachers were scored)."""
    from train.evaluate_real.labelled import teacher_predictions

    teachers = list(dict.fromkeys(t for _, rec, _, _, _ in sets for t in rec.teacher_prob))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "path", "label", "predicted", "faces_found",
                    *(f"p_{e}" for e in cfg.emotion_names), *cfg.au_names,
                    *(f"ref_{a}" for a in AU_NAMES), *(f"teacher_{t}" for t in teachers)])
        for name, rec, labels, pred, classes in sets:
            ref = reference_aus(rec.blendshapes)
            tpred = {t: teacher_predictions(rec.teacher_prob[t], classes)
                     for t in teachers if t in rec.teacher_prob}
            for i, p in enumerate(rec.paths):
                ok = bool(rec.readable[i])
                w.writerow([name, str(p), labels[i], _top(ok, pred[i], classes),
                            int(rec.faces_found[i]),
                            *(_cell(v) for v in rec.emotion_prob[i]),
                            *(_cell(v) for v in rec.au_intensity[i]),
                            *(_cell(v) for v in ref[i]),
                            *(_top(ok, tpred[t][i], classes) if t in tpred else ""
                              for t in teachers)])
    return path


def _top(readable: bool, pred: int, classes: Sequence[str]) -> str:
    """A prediction for the CSV: the class, none (no face) or unreadable."""
    if not readable:
        return "unreadable"
    return classes[pred] if pred >= 0 else NO_FACE


def _cell(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(float(v)) else ""


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report.md (report.json holds the same numbers and more)."""
    m = report["model"]
    lines = [f"# Real-face evaluation: `{m['model_id']}`", ""]
    if not m["trained"]:
        lines += ["> **UNTRAINED model set**: randomly initialised weights. Every number below is "
                  "noise around 0 and only shows that the tooling runs.", ""]
    lines += [f"* model id: `{m['model_id']}` (trained: {m['trained']}), "
              f"model dir `{m['model_dir']}`",
              f"* backend: {m['backend']}; landmarker `{report['landmarker']}`",
              f"* label mapping version {report['label_mapping_version']} "
              f"(train/synth/labels.py, docs/au_mapping.md)",
              f"* media: {len(report['media'])} items, {report['totals']['frames']} frames, "
              f"{report['totals']['faces']} face-frames"]
    for s in report.get("labelled") or []:
        lines.append(f"* labelled set `{s['name']}`: {s['n']} images (`{s['path']}`)")
    if report.get("london"):
        lines.append(f"* London set: {report['london']['people']} held-out people")
    if report.get("segments"):
        lines.append(f"* video segments: {len(report['segments']['segments'])}")
    if report.get("render_gap"):
        lines.append(f"* renders: `{report['render_gap']['renders']['path']}`")
    if report["media"]:
        lines += _media_markdown(report)
    lines += labelled_markdown(report.get("labelled") or [])
    lines += london_markdown(report.get("london"))
    lines += segments_markdown(report.get("segments"))
    lines += render_gap_markdown(report.get("render_gap"))
    return "\n".join(lines) + "\n"


def _media_markdown(report: Mapping[str, Any]) -> list[str]:
    """The label-free sections: media, yardstick 1 and 2, the time series."""
    lines = ["", "## Media", "", "| media | kind | frames | frames with face | faces | probed | "
              "error |", "|---|---|---:|---:|---:|---:|---|"]
    for it in report["media"]:
        lines.append(f"| {it['name']} | {it['kind']} | {it['frames']} | {it['frames_with_face']} | "
                     f"{it['faces']} | {it['faces_probed']} | {it['error'] or ''} |")
    pooled = report["pooled"]
    y1 = pooled["au_vs_mediapipe"]
    lines += ["", "## Yardstick 1: AU intensity vs MediaPipe blendshapes (pooled)", "",
              "Reference = MediaPipe blendshapes through the synthetic-label rules (e.g. AU12 <- "
              "5 max(mouthSmileLeft, mouthSmileRight)). n = face-frames; video frames are "
              "autocorrelated, so n overstates the independent samples. – = undefined "
              "(n < 3 or a constant signal).", "",
              f"AUs whose reference std is below {MIN_REF_STD} are *flat* (MediaPipe saw no "
              "movement): their correlations are left undefined. ref active = share of "
              "face-frames with reference intensity >= 1.", "",
              "| AU | n | Pearson | Spearman | Spearman (prob) | ICC(3,1) | MAE | ours mean | "
              "ref mean | ref std | ref active |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for au, v in y1["per_au"].items():
        lines.append(f"| {au} | {v['n']} | {_f(v['pearson'])} | {_f(v['spearman'])} | "
                     f"{_f(v['spearman_prob'])} | {_f(v['icc31'])} | {_f(v['mae'], 2)} | "
                     f"{_f(v['ours_mean'], 2)} | {_f(v['ref_mean'], 2)} | {_f(v['ref_std'], 2)}"
                     f"{' (flat)' if v['ref_flat'] else ''} | {_f(v['ref_active'], 2)} |")
    lines.append(f"| **mean** | | {_f(y1['mean_pearson'])} | {_f(y1['mean_spearman'])} | | "
                 f"{_f(y1['mean_icc31'])} | | | | | |")
    lines += ["", "### Spearman per media", "",
              "| AU | " + " | ".join(it["name"] for it in report["media"]) + " |",
              "|---|" + "---:|" * len(report["media"])]
    for au in AU_NAMES:
        cells = [f"{_f(it['metrics']['au_vs_mediapipe']['per_au'][au]['spearman'])} "
                 f"(n={it['metrics']['au_vs_mediapipe']['per_au'][au]['n']})"
                 for it in report["media"]]
        lines.append(f"| {au} | " + " | ".join(cells) + " |")
    em = pooled["emotion_vs_mediapipe"]
    lines += ["", "### Emotion vs the EMFACS label of MediaPipe's blendshapes", "",
              f"Agreement {_f(em['accuracy'])} on {em['n_labelled']} face-frames with an "
              f"unambiguous reference ({em['n_ambiguous']} ambiguous left out).", "",
              "| emotion | reference | predicted (top) |", "|---|---:|---:|"]
    for e in EMOTION_NAMES:
        lines.append(f"| {e} | {em['reference_counts'][e]} | {em['predicted_counts'][e]} |")
    y2 = pooled["normalization_fidelity"]
    lines += ["", "## Yardstick 2: normalization fidelity (MediaPipe on I_o vs I_n)", ""]
    if y2 is None:
        lines.append("Not run (--no-fidelity).")
    else:
        lines += [f"Both faces upscaled to {report['settings']['fidelity_size']} px, MediaPipe in "
                  "image mode. Fidelity = correlation over faces of each blendshape on the "
                  "original crop I_o and on the normalized face I_n; the ceiling is the same "
                  "correlation between the full frame and I_o (what cropping and upscaling alone "
                  "cost).", "",
                  f"* faces probed: {y2['faces_probed']}",
                  f"* detection rate on I_o: {_f(y2['detect_rate_original'])}, on I_n: "
                  f"{_f(y2['detect_rate_normalized'])}",
                  f"* mean Pearson over the {len(y2['expression_blendshapes'])} "
                  f"expression-relevant blendshapes: {_f(y2['mean_expression_pearson'])} "
                  f"(ceiling {_f(y2['mean_expression_ceiling_pearson'])})",
                  f"* mean Pearson over reference AUs: {_f(y2['mean_au_pearson'])}", "",
                  "| media | probed | detect I_o | detect I_n | mean expr. Pearson | ceiling |",
                  "|---|---:|---:|---:|---:|---:|"]
        for it in report["media"]:
            f2 = it["metrics"]["normalization_fidelity"]
            lines.append(f"| {it['name']} | {f2['faces_probed']} | "
                         f"{_f(f2['detect_rate_original'])} | {_f(f2['detect_rate_normalized'])} | "
                         f"{_f(f2['mean_expression_pearson'])} | "
                         f"{_f(f2['mean_expression_ceiling_pearson'])} |")
        lines += ["", "| blendshape | n | Pearson I_o~I_n | Spearman | mean abs diff | ceiling "
                  "Pearson |", "|---|---:|---:|---:|---:|---:|"]
        for name, v in y2["per_blendshape"].items():
            if v["expression"]:
                lines.append(f"| {name} | {v['n']} | {_f(v['pearson'])} | {_f(v['spearman'])} | "
                             f"{_f(v['mean_abs_diff'])} | {_f(v['ceiling_pearson'])} |")
        lines += ["", "| AU (from blendshapes) | n | Pearson I_o~I_n | ceiling |",
                  "|---|---:|---:|---:|"]
        for au, v in y2["per_au"].items():
            lines.append(f"| {au} | {v['n']} | {_f(v['pearson'])} | {_f(v['ceiling_pearson'])} |")
    if report.get("plot"):
        lines += ["", "## Time series", "", f"![time series]({Path(report['plot']).name})"]
    return lines
