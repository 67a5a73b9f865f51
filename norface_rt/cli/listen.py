"""``norface-rt listen``: subscribe to a publisher and print what arrives."""

from __future__ import annotations

import argparse
from typing import Any

from norface_rt.cli.args import fail, nonneg_float, positive_int
from norface_rt.protocol import DEFAULT_ENDPOINT


def add_parser(sub: Any) -> None:
    lp = sub.add_parser("listen", help="subscribe to a norface-rt publisher and print what arrives")
    lp.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT)
    lp.add_argument("--topic", action="append", dest="topics", metavar="STREAM_ID",
                    help="only these stream ids (repeatable; default all)")
    lp.add_argument("--out", help="write to this file instead of stdout")
    lp.add_argument("--format", default="jsonl", choices=["jsonl", "pretty"])
    lp.add_argument("--count", type=positive_int("--count"), help="stop after N messages")
    lp.add_argument("--until-eos", action="store_true",
                    help="stop once every stream seen has sent its end-of-stream message")
    lp.add_argument("--timeout", type=nonneg_float("--timeout"), default=None,
                    help="give up after S seconds without a message")
    lp.add_argument("--pull", action="store_true",
                    help="receive from a lossless PUSH hand-off (`norface-rt run --push`) with a "
                         "PULL socket instead of subscribing")
    lp.add_argument("--curve-server-key", metavar="FILE",
                    help="CURVE: the publisher's public key file (server.key)")
    lp.add_argument("--curve-secret", metavar="FILE",
                    help="CURVE: this listener's secret key file (from `norface-rt keys make`)")


def run(args: argparse.Namespace) -> int:
    from norface_rt.sinks.curve import curve_client
    from norface_rt.sinks.listen import run_listen

    try:
        curve = curve_client(args.curve_server_key, args.curve_secret)
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
    return int(run_listen(args.endpoint, out=args.out, fmt=args.format, topics=args.topics,
                          count=args.count, until_eos=args.until_eos, timeout=args.timeout,
                          curve=curve, pull=args.pull))
