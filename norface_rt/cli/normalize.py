"""``norface-rt normalize``: original / normalized / target side by side."""

from __future__ import annotations

import argparse
from typing import Any

from norface_rt.cli.args import add_command, add_options, fail, positive_int
from norface_rt.pipeline.options import PipelineOptions
from norface_rt.wire.exits import ExitCode

DEFAULT_SCALE = 2  # upscale factor of the crops in the output


def add_parser(sub: Any) -> None:
    n = add_command(sub, "normalize", help="write original / normalized / target side by side "
                                           "(PNGs for images, an mp4 for a video)")
    n.add_argument("input", help="video file, image file or image folder")
    n.add_argument("--out", required=True, help="output directory")
    # the run options of the same name: one declaration, shared with `run` and the Python API
    add_options(n, PipelineOptions, only=("model_dir", "landmarker", "max_faces"),
                help={"max_faces": "most faces per frame (the largest are kept)"})
    n.add_argument("--scale", type=positive_int("--scale"), default=DEFAULT_SCALE,
                   help="upscale factor of the crops in the output (1..8)")


def run(args: argparse.Namespace) -> int:
    import sys

    from norface_rt.tools.normalize import normalize_media

    try:
        rep = normalize_media(args.input, args.out, model_dir=args.model_dir,
                              landmarker=args.landmarker, max_faces=args.max_faces,
                              scale=args.scale)
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
    print(f"{rep.frames} frame(s), {rep.faces} face(s); wrote {len(rep.files)} file(s) to {args.out}")
    if rep.error:
        print(f"norface-rt: the input ended with an error: {rep.error}", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK
