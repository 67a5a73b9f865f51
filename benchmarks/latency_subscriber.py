"""Subscriber process for the end-to-end latency benchmark.

It runs in its own process so the measured latency includes everything a real consumer pays:
msgpack encoding, the loopback TCP hop, ZeroMQ queues and decoding, with no GIL shared with the
pipeline. For every ``frame`` message it records ``time.time() - msg["capture_time"]`` (both
wall clocks of the same machine) and writes the list as JSON when every stream it saw has sent
its ``eos``, or when ``--timeout`` seconds pass without a message.

Usage: python benchmarks/latency_subscriber.py ENDPOINT OUT.json [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from norface_rt.wire.listen import subscribe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("out", type=Path)
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="longest silence tolerated, seconds (default 30)")
    args = ap.parse_args(argv)
    latencies: list[float] = []
    open_streams: set[str] = set()
    ended: set[str] = set()
    timed_out = False
    try:
        for msg in subscribe(args.endpoint, timeout=args.timeout):
            now = time.time()  # first thing after decoding: the moment a consumer could act
            if msg["type"] == "frame":
                latencies.append(now - float(msg["capture_time"]))
                open_streams.add(msg["stream_id"])
            elif msg["type"] == "eos":
                open_streams.discard(msg["stream_id"])
                ended.add(msg["stream_id"])
                if not open_streams:
                    break
    except TimeoutError as exc:
        timed_out = True
        print(f"latency_subscriber: {exc}", file=sys.stderr)
    args.out.write_text(json.dumps({"latencies_s": latencies, "ended_streams": sorted(ended),
                                    "timed_out": timed_out}))
    return 1 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
