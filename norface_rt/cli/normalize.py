"""``norface-rt normalize``: original / normalized / target side by side."""

from __future__ import annotations

import argparse
from typing import Any

from norface_rt.cli.args import add_command, fail, positive_int
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    n = add_command(sub, "normalize", help="write original / normalized / target side by side "
                                           "(PNGs for images, an mp4 for a video)")
    n.add_argument("input", help="video file, image file or image folder")
    n.add_argument("--out", required=True, help="output directory")
    n.add_argument("--model-dir", help="Norface model set (default: $NORFACE_RT_MODEL_DIR, the "
                                       "user cache, then the packaged model)")
    n.add_argument("--landmarker", help="MediaPipe face_landmarker .task (default: "
                                        "$NORFACE_RT_LANDMARKER, then the user cache)")
    n.add_argument("--max-faces", type=positive_int("--max-faces"), default=4,
                   help="most faces per frame (the largest are kept)")
    n.add_argument("--scale", type=positive_int("--scale"), default=2,
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
