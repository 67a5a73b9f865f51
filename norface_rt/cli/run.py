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
from norface_rt.cli.args import add_command, fail, nonneg_float, positive_float, positive_int
from norface_rt.protocol import DEFAULT_ENDPOINT

log = logging.getLogger("norface_rt")

RUN_EPILOG = """\
exit codes: 0 every stream ended cleanly; 1 a stream ended with an error (frames before it
were delivered) or an output lost messages (dropped or failed: see the summary); 2 bad
arguments or missing or damaged model files; 130 interrupted (SIGINT); 143 terminated
(SIGTERM). Undecodable frames of a file are skipped and counted, not an error, unless
--stop-on-decode-error. MediaPipe's native log lines are silenced unless --verbose."""

# Shutdown budget after a signal (seconds): stages, then outputs; with the final interrupt of
# stuck outputs the process is gone well within 10 s.
STOP_STAGES_S = 3.5
STOP_SINKS_S = 3.5


def zmq_endpoint(zmq: str | None, *, files: bool) -> str | None:
    """The endpoint to publish on: the one given, else the default only when nothing else
    receives the results (a run with a file, window, NATS or PUSH output binds no PUB port, so a
    busy port cannot fail it and a listener on the default port never receives a job it did not
    ask for)."""
    if zmq is not None:
        return None if zmq.strip().lower() == "none" else zmq
    return None if files else DEFAULT_ENDPOINT


def add_parser(sub: Any) -> None:
    r = add_command(sub, "run", help="analyse video files, image folders, RTSP streams or webcams",
                    epilog=RUN_EPILOG)
    r.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="video file, image file or folder, rtsp://..., /dev/videoN or webcam:N")
    r.add_argument("--stream-id", action="append", dest="stream_ids", metavar="ID",
                   help="stream id per source, in order (default: derived from the source)")
    r.add_argument("--model-dir", help="Norface model set (default: $NORFACE_RT_MODEL_DIR, the "
                                       "user cache, then the packaged model)")
    r.add_argument("--landmarker", help="MediaPipe face_landmarker .task (default: "
                                        "$NORFACE_RT_LANDMARKER, then the user cache)")
    r.add_argument("--backend", default="onnxruntime", choices=list(BACKEND_NAMES),
                   help="inference backend (torch / torch-cuda need the 'torch' extra, tensorrt "
                        "the 'tensorrt' extra)")
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
    r.add_argument("--threads", type=positive_int("--threads"),
                   help="ONNX Runtime intra-op / torch threads (default: the library's choice)")
    r.add_argument("--max-faces", type=positive_int("--max-faces"), default=4,
                   help="most faces per frame: the largest are kept, and messages count the "
                        "faces left out (faces_cut) with a warning")
    r.add_argument("--tiling", type=float, default=None,
                   help="also scan square tiles of this fraction of the short side for small faces "
                        "(group shots; default 1.0 for images, off for video)")
    r.add_argument("--no-baseline", action="store_true",
                   help="models with a geometry input: do not remove each tracked person's "
                        "resting-face offset in videos (default: removed, bounded; see "
                        "docs/training.md)")
    r.add_argument("--smooth", type=nonneg_float("--smooth"), default=None, metavar="SECONDS",
                   help="smooth each tracked face's AU and emotion outputs over time with this "
                        "time constant (exponential; videos only; default: off)")
    r.add_argument("--max-batch", type=positive_int("--max-batch"), default=16,
                   help="faces per inference call across all streams")
    r.add_argument("--queue-size", type=positive_int("--queue-size"), default=8,
                   help="frames each pipeline queue holds (bounds memory and latency)")
    out = r.add_argument_group("outputs", "Without --zmq, a run writing any of --jsonl, --csv, "
                               "--overlay, --show, --http, --nats or --push opens no PUB socket; a run "
                               f"with none of them publishes on {DEFAULT_ENDPOINT}. Outputs are "
                               "opened only once the model and the sources have opened.")
    out.add_argument("--zmq", default=None, metavar="ENDPOINT",
                     help=f"ZeroMQ PUB endpoint, or 'none' (default: {DEFAULT_ENDPOINT} when no "
                          "other output is given, else none)")
    out.add_argument("--allow-remote", action="store_true",
                     help="allow binding a non-loopback address such as tcp://*:5556 (--zmq, "
                          "--push) or 0.0.0.0:8080 (--http)")
    out.add_argument("--sndhwm", type=positive_int("--sndhwm"), default=1000,
                     help="ZeroMQ send high-water mark (messages kept per slow subscriber)")
    out.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                     help="wait until N subscribers are connected before reading sources")
    out.add_argument("--wait-timeout", type=nonneg_float("--wait-timeout"), default=10.0,
                     help="longest wait for --wait-subscribers, in seconds")
    out.add_argument("--jsonl", help="write every message as JSON lines to this file")
    out.add_argument("--csv", help="write one row per face per frame to this file "
                                   "(columns: --csv-style)")
    out.add_argument("--csv-style", default="default", choices=["default", "openface"],
                     help="default: py-feat-like columns; openface: OpenFace 2.0 names and "
                          "conventions (docs/protocol.md compares them)")
    out.add_argument("--landmarks", action="store_true",
                     help="add MediaPipe's 478 landmarks to messages and CSV rows")
    out.add_argument("--blendshapes", action="store_true",
                     help="add MediaPipe's 52 blendshape scores to messages and CSV rows")
    out.add_argument("--overlay", help="write an annotated mp4 (one file per stream if several)")
    out.add_argument("--show", action="store_true",
                     help="show the annotated frames in a window (q or Esc ends the run; needs a "
                          "display and an OpenCV with GUI)")
    out.add_argument("--http", metavar="[HOST:]PORT",
                     help="serve a live view on http://HOST:PORT/ (the annotated video, each "
                          "face's bars and timelines, results as Server-Sent Events, /health; "
                          "docs/live_view.md); HOST defaults to 127.0.0.1, other addresses need "
                          "--allow-remote; port 0 picks a free one (default: off)")
    out.add_argument("--http-token", metavar="TOKEN", default=None,
                     help="with --http: every request must carry ?token=TOKEN (or "
                          "Authorization: Bearer TOKEN); default: $NORFACE_RT_HTTP_TOKEN, else "
                          "none")
    out.add_argument("--http-fps", type=positive_float("--http-fps"), default=30.0,
                     help="with --http: most images per second sent per stream (the results "
                          "stream carries every frame)")
    out.add_argument("--stats-interval", type=nonneg_float("--stats-interval"), default=0.0,
                     help="publish a stats message every S seconds (0 = only at the end)")
    out.add_argument("--stats-json", help="write the final per-stage stats to this JSON file")
    out.add_argument("--nats", metavar="URL", help="also publish every message to NATS JetStream "
                                                  "(nats://HOST:4222), acknowledged and replayable")
    out.add_argument("--nats-stream", default="NORFACE",
                     help="JetStream stream name (created if missing; default NORFACE)")
    out.add_argument("--nats-subject-prefix", default="norface",
                     help="subjects are PREFIX.<stream id> (default norface)")
    out.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                     help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (default: off)")
    out.add_argument("--metrics-host", default="127.0.0.1",
                     help="address of the metrics endpoint (default loopback)")
    out.add_argument("--push", metavar="ENDPOINT",
                     help="lossless hand-off: bind a ZeroMQ PUSH socket here (consumers connect "
                          "PULL, e.g. `norface-rt listen --pull ENDPOINT`)")
    out.add_argument("--push-hwm", type=positive_int("--push-hwm"), default=1000, metavar="N",
                     help="messages queued for the PULL consumers")
    out.add_argument("--push-policy", choices=["block", "drop"], default="block",
                     help="when the PUSH queue is full: block (back-pressure, up to --push-timeout "
                          "per message) or drop (counted)")
    out.add_argument("--push-timeout", type=positive_float("--push-timeout"), default=30.0,
                     metavar="S", help="longest wait for a PULL consumer before dropping")
    out.add_argument("--curve-secret", metavar="FILE",
                     help="encrypt --zmq/--push with CURVE using this server secret key file "
                          "(`norface-rt keys make`; default: no encryption)")
    out.add_argument("--curve-clients", metavar="DIR",
                     help="with --curve-secret: accept only consumers whose public key (*.key) is "
                          "in DIR (default: any consumer that knows the server's public key)")
    out.add_argument("--sink-buffer", type=positive_int("--sink-buffer"), default=1024,
                     metavar="N",
                     help="messages buffered per output (JSONL, CSV, ZeroMQ, overlay, ...); what "
                          "a stalled output cannot take is dropped and counted")
    out.add_argument("--sink-timeout", type=positive_float("--sink-timeout"), default=2.0,
                     metavar="S",
                     help="file runs: how long to wait for a full output before marking it "
                          "stalled")
    r.add_argument("--realtime", action="store_true",
                   help="pace file sources at their frame rate and treat them as live (drop-oldest)")
    r.add_argument("--loop", action="store_true", help="loop file sources forever")
    r.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    r.add_argument("--progress-interval", type=positive_float("--progress-interval"), default=10.0,
                   metavar="SECONDS",
                   help="when stderr is not a terminal, print a progress line this often")
    r.add_argument("--stop-on-decode-error", action="store_true",
                   help="end a file at its first undecodable frame (exit 1) instead of skipping "
                        "it, counting it and carrying on (the default)")
    r.add_argument("--reconnect-timeout", type=nonneg_float("--reconnect-timeout"), default=None,
                   metavar="S", help="RTSP: give up after S seconds without frames "
                                     "(default: keep retrying)")
    r.add_argument("--reconnect-tries", type=positive_int("--reconnect-tries"), default=None,
                   metavar="N", help="RTSP: give up after N failed attempts in a row "
                                     "(default: keep retrying)")


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
        landmarks=args.landmarks, blendshapes=args.blendshapes, smooth=args.smooth or None,
        triton_url=args.triton_url, triton_model=args.triton_model,
        triton_timeout=args.triton_timeout, triton_retry=args.triton_retry,
        skip_corrupt=not args.stop_on_decode_error, reconnect_timeout=args.reconnect_timeout,
        reconnect_tries=args.reconnect_tries, sink_buffer=args.sink_buffer,
        sink_timeout=args.sink_timeout)
    zmq = zmq_endpoint(args.zmq, files=bool(args.jsonl or args.csv or args.overlay or args.show
                                            or args.http or args.nats or args.push))
    sink_opts = SinkOptions(zmq=zmq, allow_remote=args.allow_remote, sndhwm=args.sndhwm,
                            jsonl=args.jsonl, csv=args.csv, overlay=args.overlay, show=args.show,
                            csv_style=args.csv_style, landmarks=args.landmarks,
                            blendshapes=args.blendshapes,
                            nats=args.nats, nats_stream=args.nats_stream,
                            nats_prefix=args.nats_subject_prefix, metrics_port=args.metrics_port,
                            metrics_host=args.metrics_host,
                            push=args.push, push_hwm=args.push_hwm, push_policy=args.push_policy,
                            push_timeout=args.push_timeout,
                            curve_secret=args.curve_secret, curve_clients=args.curve_clients,
                            http=args.http, http_token=args.http_token, http_fps=args.http_fps)
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
    if zmq is not None:
        print(f"norface-rt: publishing on {zmq}", file=sys.stderr)
    for sink in sinks:
        if sink.name == "http":
            print(f"norface-rt: live view on {sink.url}"
                  + (" (add ?token=TOKEN)" if sink.token_required else ""), file=sys.stderr)
    if not pipe.backend.config.trained:
        print("norface-rt: WARNING: this model is UNTRAINED (random weights); results are flagged "
              "'untrained' and carry no meaning.", file=sys.stderr)

    progress = None
    if not args.no_progress:
        from norface_rt.cli.progress import Progress, total_frames

        progress = Progress(total_frames([src.expected_frames for src in pipe.sources]),
                            sys.stderr, interval=args.progress_interval)
        pipe.on_result = lambda _msg: progress.update(1)

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
        # A window's events must be handled on this (the main) thread: pump() does that while
        # it waits; without a window it only waits.
        while not pipe.wait(timeout=0.0):
            if signals:
                break
            if pipe.quit_requested:
                break  # q / Esc in the --show window, or the window closed
            pipe.pump(0.2 if not pipe.pumps else 0.02)
    except Exception as exc:
        code = fail(str(exc), 1)
    finally:
        if signals:
            pipe.stop(timeout=STOP_STAGES_S, sink_grace=STOP_SINKS_S)
        else:  # ended by itself: outputs write everything they hold while they make progress
            pipe.stop(timeout=5.0)
        if not pipe.alive_threads:  # never under a stage thread that is still inferring
            try:
                pipe.backend.close()  # a remote backend unregisters its shared memory
            except Exception:
                log.exception("closing the backend failed")
        pipe.pump(0.0)  # windows are destroyed on the thread that made them
        if progress is not None:
            progress.close()
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
