"""Soak test: a looping live source through every output for a long time, memory and latency
sampled over time. Not run by pytest or CI (it is bounded but long); run it by hand:

    python benchmarks/soak.py --minutes 20            # the full soak
    python benchmarks/soak.py --minutes 1             # a smoke test

What runs: ``single_face.mp4`` paced at its frame rate and looped forever (a camera that never
stops), one pipeline with every output -- ZeroMQ PUB with a subscriber in another process, PUSH
with a PULL consumer in another process, JSONL, CSV and the overlay video (files in a temporary
folder, removed afterwards unless ``--keep``) -- and, every ``--interval`` seconds, one row:
resident memory of the process (VmRSS), frames published, frames dropped by the live source,
and capture-to-publish latency percentiles over that interval. At the end the subscriber and the
consumer report what they received (and their own capture-to-receive latency percentiles).

Verdict: memory is flat when the highest RSS of the second half exceeds the RSS at the end of
the warm-up (the first quarter, at least one interval) by no more than ``--rss-margin-mb``
(default 50 MB); the script exits 1 otherwise, or when an output lost messages. Results go to
``--out`` (JSON and a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found (the soak test reads /proc: Linux only)")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    arr = np.asarray(values) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)}


# --------------------------------------------------------------------------- consumer processes
def run_consumer(kind: str, endpoint: str, out: Path) -> int:
    """Subscriber (``sub``) or PULL consumer (``pull``): receive until the end of stream and the
    final stats message after it, then write counts, seq gaps and capture-to-receive latency
    percentiles as JSON."""
    import zmq

    from norface_rt.protocol import decode_multipart

    sock = zmq.Context().socket(zmq.PULL if kind == "pull" else zmq.SUB)
    if kind == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    latencies: list[float] = []
    frames = missed = 0
    last_seq: int | None = None
    ended = False
    while sock.poll(3_000 if ended else 180_000):  # after the end: until 3 s of silence
        _, msg = decode_multipart(sock.recv_multipart())
        now = time.time()
        if msg["type"] == "stats":
            continue
        if last_seq is not None and msg["seq"] > last_seq + 1:
            missed += msg["seq"] - last_seq - 1
        last_seq = msg["seq"]
        if msg["type"] == "eos":
            ended = True
            continue
        frames += 1
        latencies.append(now - msg["capture_time"])
    out.write_text(json.dumps({"frames": frames, "missed": missed, "ended": ended,
                               "rss_mib": rss_mib(), **percentiles(latencies)}))
    sock.close(linger=0)
    return 0 if ended else 1


# --------------------------------------------------------------------------- the soak
class LatencyWindow:
    """A sink-side view of capture-to-publish latency, emptied at every sample."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: list[float] = []
        self.frames = 0
        self.dropped = 0

    def on_result(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "frame":
            return
        with self._lock:
            self._values.append(msg["emit_time"] - msg["capture_time"])
            self.frames += 1
            self.dropped = msg["dropped_frames"]

    def take(self) -> list[float]:
        with self._lock:
            values, self._values = self._values, []
        return values


def soak(args: argparse.Namespace) -> int:
    from norface_rt.pipeline import PipelineOptions, SinkOptions, create_pipeline, make_sinks
    from norface_rt.sinks.zmq_pub import ZmqPublisher, ZmqPush

    shared = Path(os.environ.get("NORFACE_RT_SHARED", REPO.parent / "shared"))
    media = Path(args.media or shared / "media" / "single_face.mp4")
    landmarker = args.landmarker or shared / "models" / "face_landmarker_v2_with_blendshapes.task"
    work = Path(tempfile.mkdtemp(prefix="norface-soak-"))
    sink_opts = SinkOptions(zmq="tcp://127.0.0.1:*", push="tcp://127.0.0.1:*",
                            push_policy="block", jsonl=work / "soak.jsonl",
                            csv=work / "soak.csv", overlay=work / "soak.mp4")
    opts = PipelineOptions(sources=[str(media)], stream_ids=["soak"], model_dir=args.model_dir,
                           landmarker=landmarker, realtime=True, loop=True,
                           stats_interval=10.0, threads=args.threads)
    pipe = create_pipeline(opts, lambda ids: make_sinks(sink_opts, ids, landmarks=opts.landmarks,
                                                    blendshapes=opts.blendshapes))
    pub = next(s for s in pipe.sinks if isinstance(s, ZmqPublisher))
    push = next(s for s in pipe.sinks if isinstance(s, ZmqPush))
    consumers = {kind: (subprocess.Popen([sys.executable, __file__, "--consumer", kind,
                                          endpoint, str(work / f"{kind}.json")]),
                        work / f"{kind}.json")
                 for kind, endpoint in (("sub", pub.endpoint), ("pull", push.endpoint))}
    if not pub.wait_for_subscribers(1, timeout=60):
        raise SystemExit("soak: the subscriber process never subscribed")
    window = LatencyWindow()
    pipe.on_result = window.on_result
    rows: list[dict[str, Any]] = []
    duration = args.minutes * 60.0
    interval = args.interval or max(5.0, duration / 20)
    print(f"soak: {args.minutes:g} min, a row every {interval:g} s; outputs in {work}",
          flush=True)
    print(f"{'t_s':>7} {'rss_mib':>8} {'frames':>8} {'dropped':>8} {'p50_ms':>7} {'p95_ms':>7} "
          f"{'p99_ms':>7}", flush=True)
    t0 = time.monotonic()
    pipe.start()
    try:
        next_t = t0 + interval
        while time.monotonic() - t0 < duration:
            if pipe.wait(timeout=max(0.0, min(next_t, t0 + duration) - time.monotonic())):
                raise SystemExit("soak: the looping source ended, which it never should")
            if time.monotonic() >= next_t:
                next_t += interval
                row = {"t_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss_mib(), 1),
                       "frames": window.frames, "dropped": window.dropped,
                       **percentiles(window.take())}
                rows.append(row)
                print(f"{row['t_s']:>7} {row['rss_mib']:>8} {row['frames']:>8} "
                      f"{row['dropped']:>8} {row['p50_ms']:>7} {row['p95_ms']:>7} "
                      f"{row['p99_ms']:>7}", flush=True)
    finally:
        pipe.stop(timeout=10.0)
    received = {}
    for kind, (proc, out) in consumers.items():
        proc.wait(timeout=150)
        received[kind] = json.loads(out.read_text()) if out.is_file() else None
    snap = pipe.stats.snapshot()
    warm = [r for r in rows if r["t_s"] <= max(interval, duration / 4)]
    baseline = warm[-1]["rss_mib"] if warm else rows[0]["rss_mib"]
    late = [r["rss_mib"] for r in rows if r["t_s"] > duration / 2] or [rows[-1]["rss_mib"]]
    growth = max(late) - baseline
    losses = {k: v for k, v in pipe.sink_losses.items() if v}
    flat = growth <= args.rss_margin_mb
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "minutes": args.minutes, "interval_s": interval, "rows": rows,
        "rss_baseline_mib": baseline, "rss_max_late_mib": max(late),
        "rss_growth_mib": round(growth, 1), "rss_margin_mib": args.rss_margin_mb,
        "memory_flat": flat, "sink_losses": pipe.sink_losses, "received": received,
        "frames_published": snap["frames"],
        "source_dropped": snap["streams"]["soak"]["dropped_frames"],
        "sinks": snap.get("sinks", {}),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    table = ["| t (s) | RSS (MiB) | frames | dropped by the source | latency p50 / p95 / p99 (ms) |",
             "|---:|---:|---:|---:|---|"]
    table += [f"| {r['t_s']} | {r['rss_mib']} | {r['frames']} | {r['dropped']} | "
              f"{r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} |" for r in rows]
    (out_dir / "soak.md").write_text("\n".join(table) + "\n")
    print(f"soak: RSS {baseline:.1f} MiB after warm-up, at most {max(late):.1f} MiB in the second "
          f"half: growth {growth:+.1f} MiB (margin {args.rss_margin_mb:g}) -> "
          f"{'FLAT' if flat else 'GROWING'}; {snap['frames']} frames published, "
          f"{result['source_dropped']} dropped by the source; subscriber {received.get('sub')}; "
          f"PULL consumer {received.get('pull')}; output losses {losses or 'none'}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if flat and not losses else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="how long to run (default 20)")
    ap.add_argument("--interval", type=float, default=None,
                    help="seconds between rows (default: 1/20 of the run, at least 5)")
    ap.add_argument("--rss-margin-mb", type=float, default=50.0,
                    help="largest RSS growth after warm-up still called flat (default 50)")
    ap.add_argument("--model-dir", default=None, help="model set (default: the packaged one)")
    ap.add_argument("--landmarker", default=None)
    ap.add_argument("--media", default=None, help="video to loop (default: single_face.mp4)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--out", default="soak-results", help="folder for soak.json and soak.md")
    ap.add_argument("--keep", action="store_true", help="keep the output files")
    ap.add_argument("--consumer", nargs=3, metavar=("KIND", "ENDPOINT", "OUT"),
                    help=argparse.SUPPRESS)  # internal: the subscriber / PULL processes
    args = ap.parse_args(argv)
    if args.consumer:
        kind, endpoint, out = args.consumer
        return run_consumer(kind, endpoint, Path(out))
    if not args.minutes > 0:
        ap.error(f"--minutes must be > 0, got {args.minutes}")
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
