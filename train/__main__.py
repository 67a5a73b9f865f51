"""`python -m train <stage> --config cfg.json` — one entry point for every training stage.

Stages: mae, aux, normalizer, classifier, export, evaluate, cv; plus extract-frames (DISFA videos),
evaluate-real (label-free quality on real faces: ``python -m train evaluate-real --help``) and
evaluate-model (labelled metrics of an exported model set through the runtime backend),
prepare-real (permissive real faces as training shards plus the geometry calibration pool) and
teachers (permissive pretrained expression models that label training data:
``python -m train teachers --help``).
``--set a.b=VALUE`` overrides a config entry (VALUE parsed as JSON when possible), e.g.
``--set run.steps=100 --set run.device=cuda``. Runs resume from their latest checkpoint unless
``--no-resume``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from train.common import load_config

STAGES = ("mae", "aux", "normalizer", "classifier", "export", "evaluate", "cv")


def _stage_fn(stage: str) -> Callable[..., Path]:
    if stage == "mae":
        from train import mae
        return mae.run
    if stage == "aux":
        from train.auxnets import train_aux
        return lambda cfg, resume=True: train_aux.run(cfg)
    if stage == "normalizer":
        from train import normalizer
        return normalizer.run
    if stage == "classifier":
        from train import classifier
        return classifier.run
    if stage == "export":
        from train import export
        return export.run
    if stage == "evaluate":
        from train import cv
        return cv.run_evaluate
    from train import cv
    return cv.run_cv


def apply_overrides(config: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set expects KEY.PATH=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = config
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {p!r} is not a table")
        node[parts[-1]] = value
    return config


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for s in STAGES:
        p = sub.add_parser(s, help=f"run the {s} stage")
        p.add_argument("--config", required=True, help="stage config (.json or .toml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--no-resume", action="store_true", help="start fresh even if checkpoints exist")
        p.add_argument("--resume-from", default=None, help="checkpoint directory to resume from")
    x = sub.add_parser("extract-frames", help="decode a (DISFA) video into numbered JPEG frames")
    x.add_argument("video")
    x.add_argument("out_dir")
    from train import evaluate_real
    evaluate_real.add_arguments(sub.add_parser(
        "evaluate-real", help="label-free quality of a model set on real faces (model card)"))
    from train import evaluate_model
    evaluate_model.add_arguments(sub.add_parser(
        "evaluate-model", help="labelled metrics of an exported model set through the runtime backend"))
    from train.data import found, real_faces
    real_faces.add_arguments(sub.add_parser(
        "prepare-real", help="permissive real faces -> training shards + geometry pool"))
    found.add_arguments(sub.add_parser(
        "prepare-found", help="further permissive real faces (a manifest of found files) -> "
                              "unlabelled training shards for the teachers to label"))
    from train.teachers import cli as teachers_cli
    teachers_cli.add_arguments(sub.add_parser(
        "teachers", help="permissive pretrained expression models: label images and shards "
        "(cached), verify the ports, fit their face boxes"))
    args = ap.parse_args(argv)
    if args.cmd == "prepare-found":
        return found.run_cli(args)
    if args.cmd == "teachers":
        return teachers_cli.run_cli(args)
    if args.cmd == "prepare-real":
        return real_faces.run_cli(args)
    if args.cmd == "evaluate-model":
        return evaluate_model.run_cli(args)
    if args.cmd == "evaluate-real":
        return evaluate_real.run_cli(args)
    if args.cmd == "extract-frames":
        from train.data.disfa import extract_frames
        n = extract_frames(args.video, args.out_dir)
        print(f"wrote {n} frames to {args.out_dir}")
        return 0
    config = apply_overrides(load_config(args.config), args.set)
    stage = config.get("stage", args.cmd)
    if stage != args.cmd:
        raise SystemExit(f"config {args.config} is for stage {stage!r}, not {args.cmd!r}")
    resume: bool | str = False if args.no_resume else (args.resume_from or True)
    out = _stage_fn(args.cmd)(config, resume)
    print(f"{args.cmd}: done -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
