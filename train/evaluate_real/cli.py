"""``python -m train evaluate-real``: arguments, and the run that writes the report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.evaluate_real.agreement import MIN_PAIRS, blendshape_names, summarize
from train.evaluate_real.collect import MediaRecords, RealEvaluator, expand_media
from train.evaluate_real.reference import BlendshapeReference
from train.evaluate_real.report import (
    PREFERRED_PLOT_VIDEO,
    _f,
    _jsonable,
    pick_plot_video,
    plot_timeseries,
    render_markdown,
    write_faces_csv,
)
from train.synth.labels import LABEL_MAPPING_VERSION

REPORT_VERSION = 1


def run(model_dir: str | os.PathLike[str] | None, media: Sequence[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str], *, landmarker: str | os.PathLike[str] | None = None,
        backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
        stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
        fidelity_size: int = 256, fidelity_every: int = 1,
        plot_video: str | os.PathLike[str] | None = None, plot: bool = True,
        log: Any = None) -> dict[str, Any]:
    """Evaluate every media item, write report.json, report.md, faces.csv and the plot."""
    items = expand_media(media)
    plot_item = pick_plot_video(items, plot_video) if plot else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[MediaRecords] = []
    with RealEvaluator(model_dir, landmarker, backend=backend, threads=threads,
                       max_faces=max_faces, stride=stride, max_frames=max_frames,
                       fidelity=fidelity, fidelity_size=fidelity_size,
                       fidelity_every=fidelity_every) as ev:
        cfg = ev.config
        for it in items:
            rec = ev.evaluate(it)
            records.append(rec)
            if log is not None:
                print(f"evaluate-real: {it.name}: {rec.frames} frames, {len(rec)} faces "
                      f"({rec.seconds:.1f} s){' ERROR ' + rec.error if rec.error else ''}",
                      file=log, flush=True)
        model = {"model_id": cfg.model_id, "trained": bool(cfg.trained), "size": cfg.size,
                 "model_dir": str(ev.model_dir), "backend": ev.backend.name,
                 "provenance": cfg.provenance}
        landmarker_path = str(ev.landmarker_path)
    media_out = []
    for rec in records:
        media_out.append({
            "name": rec.item.name, "path": str(rec.item.path), "kind": rec.item.kind,
            "frames": rec.frames, "frames_with_face": rec.frames_with_face, "faces": len(rec),
            "faces_probed": int(sum(rec.probed)), "error": rec.error,
            "seconds": round(rec.seconds, 2), "metrics": summarize([rec], fidelity)})
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "landmarker": landmarker_path,
        "label_mapping_version": LABEL_MAPPING_VERSION,
        "reference_missing_shapes": BlendshapeReference(blendshape_names(records)).missing
        if blendshape_names(records) else [],
        "settings": {"stride": stride, "max_frames": max_frames, "max_faces": max_faces,
                     "fidelity": fidelity, "fidelity_size": fidelity_size,
                     "fidelity_every": fidelity_every, "min_pairs": MIN_PAIRS},
        "notes": ("null = undefined (fewer than min_pairs face-frames or a constant signal); "
                  "n counts face-frames, which are autocorrelated within a video"),
        "totals": {"media": len(records), "frames": sum(r.frames for r in records),
                   "frames_with_face": sum(r.frames_with_face for r in records),
                   "faces": sum(len(r) for r in records)},
        "media": media_out,
        "pooled": summarize(records, fidelity),
        "plot": None,
    }
    if plot_item is not None:
        rec = next(r for r in records if r.item == plot_item)
        if len(rec):
            p = out / f"timeseries_{plot_item.path.stem}.png"
            report["plot"] = str(plot_timeseries(rec, p, model_id=model["model_id"],
                                                 trained=model["trained"]))
    report = _jsonable(report)
    write_faces_csv(records, out / "faces.csv")
    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


# ---- CLI ----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", default=None,
                   help="model set to evaluate (default: the runtime's model resolution)")
    p.add_argument("--media", nargs="+", required=True, metavar="PATH",
                   help="videos, images or folders (a folder: each video, plus its stills as "
                   "one item)")
    p.add_argument("--out", required=True,
                   help="folder for report.json, report.md, faces.csv and the plot")
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "tensorrt"))
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--stride", type=int, default=1, help="analyse every N-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="analysed frames per media item")
    p.add_argument("--no-fidelity", action="store_true", help="skip yardstick 2 (2 extra "
                   "MediaPipe runs per face)")
    p.add_argument("--fidelity-size", type=int, default=256,
                   help="side in px that I_o and I_n are upscaled to for MediaPipe")
    p.add_argument("--fidelity-every", type=int, default=1, help="probe every N-th face only")
    p.add_argument("--plot-video", default=None, help="which --media video to plot (default: "
                   f"{PREFERRED_PLOT_VIDEO} if listed, else the first video)")
    p.add_argument("--no-plot", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
    report = run(args.model_dir, args.media, args.out, landmarker=args.landmarker,
                 backend=args.backend, threads=args.threads, max_faces=args.max_faces,
                 stride=args.stride, max_frames=args.max_frames, fidelity=not args.no_fidelity,
                 fidelity_size=args.fidelity_size, fidelity_every=args.fidelity_every,
                 plot_video=args.plot_video, plot=not args.no_plot, log=sys.stderr)
    y1 = report["pooled"]["au_vs_mediapipe"]
    y2 = report["pooled"]["normalization_fidelity"]
    m = report["model"]
    print(f"evaluate-real: {m['model_id']} ({'trained' if m['trained'] else 'UNTRAINED'}): "
          f"{report['totals']['faces']} face-frames; AU vs MediaPipe mean Spearman "
          f"{_f(y1['mean_spearman'])}; fidelity "
          f"{_f(y2['mean_expression_pearson']) if y2 else 'n/a'} -> {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import train.evaluate_real as package

    doc = package.__doc__
    ap = argparse.ArgumentParser(prog="python -m train.evaluate_real",
                                 description=doc.splitlines()[0] if doc else None)
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))
