"""``norface-rt plot``: a timeline picture of a run's emotions and AUs per tracked person."""

from __future__ import annotations

import argparse
from typing import Any

from norface_rt.cli.args import add_command, fail, positive_int
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    p = add_command(sub, "plot", help="draw each tracked face's emotions and AUs over time from a "
                                      "--jsonl results file (needs the 'plot' extra)")
    p.add_argument("results", help="JSONL file written by norface-rt run --jsonl")
    p.add_argument("--out", required=True, help="image to write (png, svg or pdf)")
    p.add_argument("--video", help="the run's source video, for face thumbnails (image-folder "
                                   "runs find their files by themselves)")
    p.add_argument("--stream", metavar="ID", help="only this stream (default: every stream)")
    p.add_argument("--aus", help="comma-separated AUs to draw, e.g. AU06,AU12 (default: the six "
                                 "that vary most)")
    p.add_argument("--max-tracks", type=positive_int("--max-tracks"), default=6,
                   help="most tracks drawn (the longest ones)")
    p.add_argument("--dpi", type=positive_int("--dpi"), default=110, help="image resolution")


def run(args: argparse.Namespace) -> int:
    from norface_rt.tools.plot import plot_timeline

    aus = [a.strip() for a in args.aus.split(",") if a.strip()] if args.aus else None
    try:
        out = plot_timeline(args.results, args.out, video=args.video, stream=args.stream, aus=aus,
                            max_tracks=args.max_tracks, dpi=args.dpi)
    except (FileNotFoundError, ValueError, TimeoutError) as exc:
        return fail(str(exc))
    print(f"wrote {out}")
    return ExitCode.OK
