"""``norface-rt run``: analyse sources and publish every frame's results."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from norface_rt.backends import BACKEND_NAMES
from norface_rt.cli.args import fail, nonneg_float, positive_int
from norface_rt.protocol import DEFAULT_ENDPOINT

log = logging.getLogger("norface_rt")


def add_parser(sub: Any) -> None:
    r = sub.add_parser("run", help="analyse video files, image folders, RTSP streams or webcams")
    r.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video file, image file or folder, rtsp://..., /dev/videoN or webcam:N")
    r.add_argument("--stream-id", action="append", dest="stream_ids", metavar="ID",
                   help="stream id per source, in order (default: derived from the source)")
    r.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    r.add_argument("--landmarker", help="MediaPipe face_landmarker .task (else $NORFACE_RT_LANDMARKER)")
    r.add_argument("--backend", default="onnxruntime", choices=list(BACKEND_NAMES))
    r.add_argument("--triton-url", default=None, metavar="grpc://HOST:PORT",
                   help="with --backend triton: the Triton server's gRPC endpoint (the model and "
                        "its config come from the server; docs/scaling.md)")
    r.add_argument("--triton-model", default="norface",
                   help="with --backend triton: the ensemble's name (default norface)")
    r.add_argument("--triton-timeout", type=nonneg_float("--triton-timeout"), default=10.0,
                   help="with --backend triton: seconds one request may take (default 10)")
    r.add_argument("--triton-retry", type=nonneg_float("--triton-retry"), default=30.0,
                   help="with --backend triton: seconds a batch is retried while the server is "
                        "down, restarting or overloaded, before its frames are flagged (default 30)")
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
    r.add_argument("--nats", metavar="URL", help="also publish every message to NATS JetStream "
                                                "(nats://HOST:4222), acknowledged and replayable")
    r.add_argument("--nats-stream", default="NORFACE",
                   help="JetStream stream name (created if missing; default NORFACE)")
    r.add_argument("--nats-subject-prefix", default="norface",
                   help="subjects are PREFIX.<stream id> (default norface)")
    r.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics")
    r.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics endpoint (default loopback)")
    r.add_argument("--stats-interval", type=nonneg_float("--stats-interval"), default=0.0,
                   help="publish a stats message every S seconds (0 = only at the end)")
    r.add_argument("--stats-json", help="write the final per-stage stats to this JSON file")
    r.add_argument("--realtime", action="store_true",
                   help="pace file sources at their frame rate and treat them as live (drop-oldest)")
    r.add_argument("--loop", action="store_true", help="loop file sources forever")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


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
        triton_url=args.triton_url, triton_model=args.triton_model,
        triton_timeout=args.triton_timeout, triton_retry=args.triton_retry)
    sink_opts = SinkOptions(zmq=args.zmq, allow_remote=args.allow_remote, sndhwm=args.sndhwm,
                            jsonl=args.jsonl, csv=args.csv, overlay=args.overlay, show=args.show,
                            nats=args.nats, nats_stream=args.nats_stream,
                            nats_prefix=args.nats_subject_prefix, metrics_port=args.metrics_port,
                            metrics_host=args.metrics_host)
    sinks: list[Any] = []
    try:
        opts.validate()
        if opts.backend == "tensorrt":
            from norface_rt.cli.build_engines import ensure_engines
            from norface_rt.paths import resolve_model_dir

            ensure_engines(resolve_model_dir(opts.model_dir), device=opts.device or "cuda")
        sinks = make_sinks(sink_opts, len(args.sources))
        pipe = create_pipeline(opts, sinks)  # resolves and loads the model first: fails fast
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        for s in sinks:
            s.close()
        return fail(str(exc))
    for sink in sinks:  # the metrics endpoint also shows queue depths and reconnections
        if hasattr(sink, "watch"):
            sink.watch(queue_depths=pipe.queue_depths, reconnects=pipe.reconnects)
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

    interrupted = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted.set()

    old = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        pipe.start()
        while not pipe.wait(timeout=0.2):
            if interrupted.is_set():
                code = 130
                break
            if pipe.quit_requested:
                break  # q / Esc in the --show window
    except Exception as exc:
        code = fail(str(exc), 1)
    finally:
        pipe.stop(timeout=5.0)
        pipe.backend.close()  # a remote backend unregisters its shared memory
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
    snap = pipe.stats.snapshot()
    print(pipe.stats.summary_table(), file=sys.stderr)
    if args.stats_json:
        Path(args.stats_json).write_text(json.dumps(snap, indent=2) + "\n")
    if code == 0 and any(s.get("error") for s in snap["streams"].values()):
        code = 1
    if code == 0 and pipe.sink_errors:
        print(f"norface-rt: {pipe.sink_errors} sink write(s) failed (see log)", file=sys.stderr)
        code = 1
    return code
