"""``norface-rt listen``: subscribe to a publisher and print what arrives."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Generator
from typing import Any

from norface_rt.cli.args import add_command, fail, nonneg_float, positive_int
from norface_rt.wire.names import DEFAULT_ENDPOINT, NATS_STREAM, NATS_SUBJECT_PREFIX


def add_parser(sub: Any) -> None:
    lp = add_command(sub, "listen", help="subscribe to a norface-rt publisher and print what "
                                         "arrives (says on stderr that it is waiting)")
    lp.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT,
                    help="ZeroMQ endpoint of the publisher (norface-rt run --zmq)")
    lp.add_argument("--topic", action="append", dest="topics", metavar="STREAM_ID",
                    help="only these stream ids (repeatable; default: all)")
    lp.add_argument("--out", help="write to this file (default: stdout)")
    lp.add_argument("--format", default="jsonl", choices=["jsonl", "pretty"],
                    help="jsonl: every message as one JSON line; pretty: one readable line each")
    lp.add_argument("--count", type=positive_int("--count"), help="stop after N messages")
    lp.add_argument("--until-eos", action="store_true",
                    help="stop once every stream seen has sent its end-of-stream message")
    lp.add_argument("--timeout", type=nonneg_float("--timeout"), default=None,
                    help="give up after S seconds without a message (default: wait forever)")
    lp.add_argument("--nats", metavar="URL",
                    help="read a NATS JetStream stream instead of a ZeroMQ publisher (replayable)")
    lp.add_argument("--nats-stream", default=NATS_STREAM,
                    help="JetStream stream (default %(default)s)")
    lp.add_argument("--nats-subject-prefix", default=NATS_SUBJECT_PREFIX,
                    help="subject prefix the publisher used (default %(default)s)")
    lp.add_argument("--from-seq", type=positive_int("--from-seq"), default=1,
                    help="with --nats: start at this stream sequence number (default 1, the oldest)")
    lp.add_argument("--pull", action="store_true",
                    help="receive from a lossless PUSH hand-off (`norface-rt run --push`) with a "
                         "PULL socket instead of subscribing")
    lp.add_argument("--ack", metavar="ENDPOINT",
                    help="with --pull: confirm each message to the producer's --push-ack "
                         "endpoint (what this listener held is sent again to another consumer "
                         "if it dies; default: no confirmations)")
    lp.add_argument("--curve-server-key", metavar="FILE",
                    help="CURVE: the publisher's public key file (server.key; default: no CURVE)")
    lp.add_argument("--curve-secret", metavar="FILE",
                    help="CURVE: this listener's secret key file (from `norface-rt keys make`; "
                         "goes with --curve-server-key; default: no CURVE)")


def run(args: argparse.Namespace) -> int:
    from norface_rt.wire.curve import curve_client
    from norface_rt.wire.listen import run_listen

    messages = None
    if args.nats:
        if args.pull or args.curve_server_key or args.curve_secret:
            return fail("--nats reads JetStream: --pull and --curve-* apply to ZeroMQ only")
        from norface_rt.sinks.nats_js import replay

        def messages(on_malformed: Callable[[Any], None]) -> Generator[dict[str, Any], None, None]:
            for _seq, msg in replay(args.nats, args.nats_stream, from_seq=args.from_seq,
                                    stream_ids=args.topics, subject_prefix=args.nats_subject_prefix,
                                    timeout=args.timeout, on_malformed=on_malformed):
                yield msg
    elif args.from_seq != 1:
        return fail("--from-seq needs --nats (a ZeroMQ publisher keeps no history)")
    if args.ack and not args.pull:
        return fail("--ack needs --pull (confirmations go to a --push hand-off)")
    try:
        curve = curve_client(args.curve_server_key, args.curve_secret)
        return int(run_listen(args.nats or args.endpoint, out=args.out, fmt=args.format,
                              topics=args.topics, count=args.count, until_eos=args.until_eos,
                              timeout=args.timeout, curve=curve, pull=args.pull,
                              ack=args.ack, messages=messages))
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
