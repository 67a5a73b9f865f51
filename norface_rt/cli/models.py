"""``norface-rt models``: create an untrained model set, download the landmarker, show a config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from norface_rt.cli.args import add_command, fail
from norface_rt.config import SIZES


def add_parser(sub: Any) -> None:
    m = add_command(sub, "models", help="manage model files: create an untrained set, download "
                                        "the MediaPipe landmarker, show a config")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    mi = add_command(msub, "init-untrained", help="write a randomly initialised model set "
                                                  "(plumbing only; needs the 'export' extra)")
    mi.add_argument("out_dir", help="folder to write the model set to")
    mi.add_argument("--size", default="small", choices=list(SIZES), help="network size")
    mi.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    mi.add_argument("--geometry", action="store_true",
                    help="with the blendshape geometry input (default: image-only)")
    md = add_command(msub, "download", help="download the MediaPipe face landmarker "
                                            "(sha256-checked; exit 1 when the download fails)")
    md.add_argument("--dest", help="directory (default: the user cache, "
                                   "~/.cache/norface-rt/models)")
    mf = add_command(msub, "info", help="print the config of a model set")
    mf.add_argument("model_dir", nargs="?",
                    help="model set folder (default: the one `run` would use)")


def run(args: argparse.Namespace) -> int:
    if args.models_command == "init-untrained":
        from norface_rt.export import init_untrained

        out = init_untrained(Path(args.out_dir), size=args.size, seed=args.seed,
                             geometry=args.geometry)
        print(f"wrote an UNTRAINED {args.size} model set to {out} (results will be flagged untrained)")
        return 0
    if args.models_command == "download":
        from norface_rt.download import download_landmarker

        try:
            path = download_landmarker(Path(args.dest) if args.dest else None)
        except RuntimeError as exc:  # offline, refused, checksum mismatch: one line, exit 1
            return fail(str(exc), 1)
        except OSError as exc:  # the destination cannot be written
            return fail(f"--dest: cannot write the landmarker there: {exc}", 2)
        print(f"MediaPipe face landmarker at {path}")
        return 0
    if args.models_command == "info":
        from norface_rt.model_set import load_config
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        print(f"model set: {d}")
        print(load_config(d).to_json())
        return 0
    raise AssertionError(args.models_command)
