"""Browsers' worth of live-view clients in one process, for benchmarks/test_live_view_bench.py.

``python benchmarks/live_viewers.py URL STREAM --viewers N --stalled M``: N viewers that each
read one stream's MJPEG images and the event stream as fast as they come (what an open page
does), and M stalled viewers that ask for both and then never read (a browser tab frozen by
its machine, a dead network path): their sockets' receive buffers are made small so they fill
at once. Prints ``ready`` once every connection got its response headers, then, on SIGTERM or
SIGINT, one JSON line with what the readers received, and exits.

A separate process, as real viewers are: its reading costs the machine's CPU, not the
pipeline's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from urllib.parse import quote, urlsplit


async def _reader(host: str, port: int, path: str, counts: dict[str, int], key: str,
                  marker: bytes, ready: asyncio.Event, n_ready: list[int], want: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"{path}: {head[:200]!r}")
    n_ready[0] += 1
    if n_ready[0] == want:
        ready.set()
    tail = b""
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return
        counts[key + "_bytes"] += len(data)
        chunk = tail + data
        counts[key] += chunk.count(marker)
        tail = chunk[-len(marker) + 1:]


def _stall(host: str, port: int, path: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return s  # and never read


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("stream")
    ap.add_argument("--viewers", type=int, default=20)
    ap.add_argument("--stalled", type=int, default=0)
    args = ap.parse_args()
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    mjpeg, events = f"/stream/{quote(args.stream, safe='')}.mjpg", "/events"
    stalled = [_stall(host, port, p) for _ in range(args.stalled) for p in (mjpeg, events)]
    counts = {"images": 0, "images_bytes": 0, "events": 0, "events_bytes": 0}
    ready = asyncio.Event()
    n_ready = [0]
    want = 2 * args.viewers
    tasks = [asyncio.create_task(_reader(host, port, p, counts, k, m, ready, n_ready, want))
             for _ in range(args.viewers)
             for p, k, m in ((mjpeg, "images", b"Content-Type: image/jpeg"),
                             (events, "events", b"\nid: "))]
    if want == 0:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait_for(ready.wait(), 60)
    print("ready", flush=True)
    await stop.wait()
    print(json.dumps({**counts, "viewers": args.viewers, "stalled": args.stalled}), flush=True)
    for t in tasks:
        t.cancel()
    for s in stalled:
        s.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
