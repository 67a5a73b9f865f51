"""``norface-rt models``: create an untrained model set, download the landmarker, show a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from norface_rt.config import SIZES, ModelConfig


def add_parser(sub: Any) -> None:
    m = sub.add_parser("models", help="manage model files")
    msub = m.add_subparsers(dest="models_command", required=True)
    mi = msub.add_parser("init-untrained", help="write a randomly initialised model set "
                                                "(plumbing only; needs the 'export' extra)")
    mi.add_argument("out_dir")
    mi.add_argument("--size", default="small", choices=list(SIZES))
    mi.add_argument("--seed", type=int, default=0)
    md = msub.add_parser("download", help="download the MediaPipe face landmarker (sha256-checked)")
    md.add_argument("--dest", help="directory (default: the user cache)")
    mf = msub.add_parser("info", help="print the config of a model set")
    mf.add_argument("model_dir", nargs="?")
    mm = msub.add_parser("manifest", help="write manifest.json (sha256 of each file) into a model "
                                          "set made before manifests existed")
    mm.add_argument("model_dir")
    mv = msub.add_parser("verify", help="check a model set against its manifest and load it")
    mv.add_argument("model_dir", nargs="?")


def run(args: argparse.Namespace) -> int:
    if args.models_command == "init-untrained":
        from norface_rt.export import init_untrained

        out = init_untrained(Path(args.out_dir), size=args.size, seed=args.seed)
        print(f"wrote an UNTRAINED {args.size} model set to {out} (results will be flagged untrained)")
        return 0
    if args.models_command == "download":
        from norface_rt.download import download_landmarker

        path = download_landmarker(Path(args.dest) if args.dest else None)
        print(f"MediaPipe face landmarker at {path}")
        return 0
    if args.models_command == "manifest":
        from norface_rt.model_set import write_manifest

        d = Path(args.model_dir)
        _check_loads(d)  # never vouch for files that do not load as a model set
        print(f"wrote {write_manifest(d)}")
        return 0
    if args.models_command == "verify":
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        cfg = _check_loads(d)
        print(f"model set {d}: {cfg.model_id}: every file matches its manifest and loads")
        return 0
    if args.models_command == "info":
        from norface_rt.model_set import load_config
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        print(f"model set: {d}")
        print(load_config(d).to_json())
        return 0
    raise AssertionError(args.models_command)


def _check_loads(model_dir: Path) -> ModelConfig:
    """Open the set's graphs with ONNX Runtime (checks the manifest when there is one, the
    config's bounds and its agreement with the graphs); errors name the file."""
    from norface_rt.backends import load_backend

    with load_backend(model_dir, "onnxruntime") as backend:
        return backend.config
