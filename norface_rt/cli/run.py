"""``norface-rt run``: analyse sources and publish every frame's results.

SIGINT and SIGTERM end a run within about 10 s whatever an output is doing: sources stop, every
stream's end-of-stream message goes to each output that can still take it, outputs get a few
seconds to write what they hold, and an output still blocked then (a pipe nobody reads) is left
behind with its losses counted. The exit status is 130 (SIGINT) or 143 (SIGTERM); a second
signal leaves at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from norface_rt.backends import BACKEND_NAMES
from norface_rt.cli.args import fail, nonneg_float, positive_int
from norface_rt.protocol import DEFAULT_ENDPOINT

log = logging.getLogger("norface_rt")

# Shutdown budget after a signal (seconds): stages, then outputs; with the final interrupt of
# stuck outputs the process is gone well within 10 s.
STOP_STAGES_S = 3.5
STOP_SINKS_S = 3.5


def add_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="analyse video files, image folders, RTSP streams or webcams")
    r.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video file, image file or folder, rtsp://..., /dev/videoN or webcam:N")
    r.add_argument("--stream-id", action="append", dest="stream_ids", metavar="ID",
                   help="stream id per source, in order (default: derived from the source)")
    r.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    r.add_argument("--landmarker", help="MediaPipe face_landmarker .task (else $NORFACE_RT_LANDMARKER)")
    r.add_argument("--backend", default="onnxruntime", choices=list(BACKEND_NAMES))
    r.add_argument("--device", default=None,
                   help="device of the torch / torch-cuda / tensorrt backends (cpu, cuda, cuda:N); "
                        "default cpu for torch, cuda for torch-cuda and tensorrt")
    r.add_argument("--device-align", action="store_true",
                   help="with --backend torch-cuda: upload each frame once and warp its faces on the "
                        "GPU instead of copying aligned crops")
    r.add_argument("--fused", action="store_true",
                   help="no longer available (model sets ship the two graphs only); kept so old "
                        "command lines get a clear error")
    r.add_argument("--threads", type=positive_int("--threads"), help="ONNX Runtime intra-op threads")
    r.add_argument("--max-faces", type=positive_int("--max-faces"), default=4)
    r.add_argument("--tiling", type=float, default=None,
                   help="also scan square tiles of this fraction of the short side for small faces "
                        "(group shots; default 1.0 for images, off for video)")
    r.add_argument("--no-baseline", action="store_true",
                   help="models with a geometry input: do not remove each tracked person's "
                        "resting-face offset in videos (default: removed, bounded; see "
                        "docs/training.md)")
    r.add_argument("--max-batch", type=positive_int("--max-batch"), default=16,
                   help="faces per inference call across all streams")
    r.add_argument("--queue-size", type=positive_int("--queue-size"), default=8)
    r.add_argument("--zmq", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"ZeroMQ PUB endpoint (default {DEFAULT_ENDPOINT}; 'none' to disable)")
    r.add_argument("--allow-remote", action="store_true",
                   help="allow binding a non-loopback address such as tcp://*:5556")
    r.add_argument("--sndhwm", type=positive_int("--sndhwm"), default=1000,
                   help="ZeroMQ send high-water mark (messages kept per slow subscriber)")
    r.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="wait until N subscribers are connected before reading sources")
    r.add_argument("--wait-timeout", type=nonneg_float("--wait-timeout"), default=10.0)
    r.add_argument("--jsonl", help="write every message as JSON lines to this file")
    r.add_argument("--csv", help="write one row per face per frame (OpenFace/py-feat style)")
    r.add_argument("--overlay", help="write an annotated mp4 (one file per stream if several)")
    r.add_argument("--show", action="store_true", help="show the annotated frames in a window")
    r.add_argument("--stats-interval", type=nonneg_float("--stats-interval"), default=0.0,
                   help="publish a stats message every S seconds (0 = only at the end)")
    r.add_argument("--stats-json", help="write the final per-stage stats to this JSON file")
    r.add_argument("--realtime", action="store_true",
                   help="pace file sources at their frame rate and treat them as live (drop-oldest)")
    r.add_argument("--loop", action="store_true", help="loop file sources forever")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--stop-on-decode-error", action="store_true",
                   help="end a file at its first undecodable frame (exit 1) instead of skipping "
                        "it, counting it and carrying on (the default)")
    r.add_argument("--reconnect-timeout", type=nonneg_float("--reconnect-timeout"), default=None,
                   metavar="S", help="RTSP: give up after S seconds without frames "
                                     "(default: keep retrying)")
    r.add_argument("--reconnect-tries", type=positive_int("--reconnect-tries"), default=None,
                   metavar="N", help="RTSP: give up after N failed attempts in a row "
                                     "(default: keep retrying)")
    r.add_argument("--sink-buffer", type=positive_int("--sink-buffer"), default=1024, metavar="N",
                   help="messages buffered per output (JSONL, CSV, ZeroMQ, overlay, ...); what a "
                        "stalled output cannot take is dropped and counted")
    r.add_argument("--sink-timeout", type=nonneg_float("--sink-timeout"), default=2.0, metavar="S",
                   help="file runs: how long to wait for a full output before marking it stalled")
    r.add_argument("--push", metavar="ENDPOINT",
                   help="lossless hand-off: bind a ZeroMQ PUSH socket here (consumers connect "
                        "PULL, e.g. `norface-rt listen --pull ENDPOINT`)")
    r.add_argument("--push-hwm", type=positive_int("--push-hwm"), default=1000, metavar="N",
                   help="messages queued for the PULL consumers")
    r.add_argument("--push-policy", choices=["block", "drop"], default="block",
                   help="when the PUSH queue is full: block (back-pressure, up to --push-timeout "
                        "per message) or drop (counted)")
    r.add_argument("--push-timeout", type=nonneg_float("--push-timeout"), default=30.0,
                   metavar="S", help="longest wait for a PULL consumer before dropping")
    r.add_argument("--curve-secret", metavar="FILE",
                   help="encrypt --zmq/--push with CURVE using this server secret key file "
                        "(`norface-rt keys make`)")
    r.add_argument("--curve-clients", metavar="DIR",
                   help="with --curve-secret: accept only consumers whose public key (*.key) is "
                        "in DIR")


def _wait_for_subscribers(sinks: list[Any], n: int, timeout: float) -> None:
    from norface_rt.sinks.zmq_pub import ZmqPublisher

    for pub in (s for s in sinks if isinstance(s, ZmqPublisher)):
        if not pub.wait_for_subscribers(n, timeout):
            log.warning("only some of %d subscribers connected within %.1f s; continuing",
                        n, timeout)


def run(args: argparse.Namespace) -> int:
    from norface_rt.pipeline import PipelineOptions, SinkOptions, create_pipeline, make_sinks
    from norface_rt.pipeline.options import FUSED_REMOVED

    if args.fused:
        return fail(FUSED_REMOVED)
    opts = PipelineOptions(
        sources=args.sources, stream_ids=args.stream_ids, model_dir=args.model_dir,
        landmarker=args.landmarker, backend=args.backend, device=args.device, threads=args.threads,
        max_faces=args.max_faces, max_batch=args.max_batch, queue_size=args.queue_size,
        realtime=args.realtime, loop=args.loop, stats_interval=args.stats_interval,
        tiling=args.tiling, device_align=args.device_align, baseline=not args.no_baseline,
        skip_corrupt=not args.stop_on_decode_error, reconnect_timeout=args.reconnect_timeout,
        reconnect_tries=args.reconnect_tries, sink_buffer=args.sink_buffer,
        sink_timeout=args.sink_timeout)
    sink_opts = SinkOptions(zmq=args.zmq, allow_remote=args.allow_remote, sndhwm=args.sndhwm,
                            jsonl=args.jsonl, csv=args.csv, overlay=args.overlay, show=args.show,
                            push=args.push, push_hwm=args.push_hwm, push_policy=args.push_policy,
                            push_timeout=args.push_timeout,
                            curve_secret=args.curve_secret, curve_clients=args.curve_clients)
    sinks: list[Any] = []

    def open_sinks() -> list[Any]:
        sinks.extend(make_sinks(sink_opts, len(args.sources)))
        return sinks

    try:
        opts.validate()
        sink_opts.validate()
        if opts.backend == "tensorrt":
            from norface_rt.cli.build_engines import ensure_engines
            from norface_rt.paths import resolve_model_dir

            ensure_engines(resolve_model_dir(opts.model_dir), device=opts.device or "cuda")
        # Model and sources open first (fail fast); outputs only then, so a run that cannot
        # start leaves no output files behind.
        pipe = create_pipeline(opts, open_sinks)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        for s in sinks:
            s.close()
        return fail(str(exc))
    if args.wait_subscribers > 0:  # only now: a missing model was reported without the wait
        _wait_for_subscribers(sinks, args.wait_subscribers, args.wait_timeout)
    if not pipe.backend.config.trained:
        print("norface-rt: WARNING: this model is UNTRAINED (random weights); results are flagged "
              "'untrained' and carry no meaning.", file=sys.stderr)

    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        totals = [s.expected_frames for s in pipe.sources]
        total = sum(t for t in totals if t) if all(totals) else None
        bar = tqdm(total=total, unit="frame", dynamic_ncols=True)
        pipe.on_result = lambda _msg: bar.update(1)

    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if signals:  # a second signal: leave at once
            os.write(2, b"norface-rt: second signal, leaving at once\n")
            os._exit(128 + signum)
        signals.append(signum)
        pipe.hurry(STOP_SINKS_S)  # bounds the wait for outputs, also when it has begun

    old = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        pipe.start()
        while not pipe.wait(timeout=0.2):
            if signals:
                break
            if pipe.quit_requested:
                break  # q / Esc in the --show window
    except Exception as exc:
        code = fail(str(exc), 1)
    finally:
        if signals:
            pipe.stop(timeout=STOP_STAGES_S, sink_grace=STOP_SINKS_S)
        else:  # ended by itself: outputs write everything they hold while they make progress
            pipe.stop(timeout=5.0)
        if bar is not None:
            bar.close()
    if signals:
        code = 128 + signals[0]
    code = report(pipe, args, code)
    signal.signal(signal.SIGINT, old)
    signal.signal(signal.SIGTERM, old_term)
    if pipe.stuck_sinks or pipe.alive_threads:
        # A thread blocked in write(2) on a pipe nobody reads can be neither woken nor joined,
        # and interpreter shutdown would wait on the file it holds: leave without it.
        sys.stderr.flush()
        os._exit(code)
    return code


def report(pipe: Any, args: argparse.Namespace, code: int) -> int:
    """Print the summary (per-stage times, streams, outputs), write --stats-json, and return the
    exit status: 1 when it was 0 but a stream ended with an error or an output lost messages."""
    snap = pipe.stats.snapshot()
    print(pipe.stats.summary_table(), file=sys.stderr)
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(snap, indent=2) + "\n")
    for sid, s in snap["streams"].items():
        if s.get("skipped_frames"):
            print(f"norface-rt: stream {sid}: {s['skipped_frames']} undecodable frame(s) skipped "
                  "(their indices are in its end-of-stream message)", file=sys.stderr)
    if code == 0 and any(s.get("error") for s in snap["streams"].values()):
        code = 1
    losses = {name: n for name, n in pipe.sink_losses.items() if n}
    if losses:
        stuck = set(pipe.stuck_sinks)
        print("norface-rt: output(s) lost messages: " + ", ".join(
            f"{name} {n}" + (" (stuck, abandoned)" if name in stuck else "")
            for name, n in losses.items()), file=sys.stderr)
        if code == 0:
            code = 1
    return code
