"""The ``norface-rt`` command line.

Exit codes: 0 = every stream ended cleanly; 1 = a stream ended with an error (results up to the
error were still delivered); 2 = bad arguments or missing model files; 130 = interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from norface_rt import __version__
from norface_rt.backends import BACKEND_NAMES

log = logging.getLogger("norface_rt")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"


def positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v

    return parse


def _nonneg_float(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {v}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="norface-rt",
        description="Real-time facial expression analysis (FACS AUs, emotions) per tracked face.")
    p.add_argument("--version", action="version", version=f"norface-rt {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

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
                   help="ONNX Runtime: run normalization + classification as one graph "
                        "(stats then show one 'infer' stage instead of normalize + classify)")
    r.add_argument("--threads", type=positive_int("--threads"), help="ONNX Runtime intra-op threads")
    r.add_argument("--max-faces", type=positive_int("--max-faces"), default=4)
    r.add_argument("--tiling", type=float, default=None,
                   help="also scan square tiles of this fraction of the short side for small faces "
                        "(group shots; default 1.0 for images, off for video)")
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
    r.add_argument("--wait-timeout", type=_nonneg_float("--wait-timeout"), default=10.0)
    r.add_argument("--jsonl", help="write every message as JSON lines to this file")
    r.add_argument("--csv", help="write one row per face per frame (OpenFace/py-feat style)")
    r.add_argument("--overlay", help="write an annotated mp4 (one file per stream if several)")
    r.add_argument("--show", action="store_true", help="show the annotated frames in a window")
    r.add_argument("--stats-interval", type=_nonneg_float("--stats-interval"), default=0.0,
                   help="publish a stats message every S seconds (0 = only at the end)")
    r.add_argument("--stats-json", help="write the final per-stage stats to this JSON file")
    r.add_argument("--realtime", action="store_true",
                   help="pace file sources at their frame rate and treat them as live (drop-oldest)")
    r.add_argument("--loop", action="store_true", help="loop file sources forever")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    lp = sub.add_parser("listen", help="subscribe to a norface-rt publisher and print what arrives")
    lp.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT)
    lp.add_argument("--topic", action="append", dest="topics", metavar="STREAM_ID",
                    help="only these stream ids (repeatable; default all)")
    lp.add_argument("--out", help="write to this file instead of stdout")
    lp.add_argument("--format", default="jsonl", choices=["jsonl", "pretty"])
    lp.add_argument("--count", type=positive_int("--count"), help="stop after N messages")
    lp.add_argument("--until-eos", action="store_true",
                    help="stop once every stream seen has sent its end-of-stream message")
    lp.add_argument("--timeout", type=_nonneg_float("--timeout"), default=None,
                    help="give up after S seconds without a message")

    n = sub.add_parser("normalize", help="write original / normalized / target side by side "
                                         "(PNGs for images, an mp4 for a video)")
    n.add_argument("input", help="video file, image file or image folder")
    n.add_argument("--out", required=True, help="output directory")
    n.add_argument("--model-dir")
    n.add_argument("--landmarker")
    n.add_argument("--max-faces", type=positive_int("--max-faces"), default=4)
    n.add_argument("--scale", type=positive_int("--scale"), default=2,
                   help="upscale factor of the crops in the output (1..8)")

    m = sub.add_parser("models", help="manage model files")
    msub = m.add_subparsers(dest="models_command", required=True)
    mi = msub.add_parser("init-untrained", help="write a randomly initialised model set (plumbing only)")
    mi.add_argument("out_dir")
    mi.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    mi.add_argument("--seed", type=int, default=0)
    md = msub.add_parser("download", help="download the MediaPipe face landmarker (sha256-checked)")
    md.add_argument("--dest", help="directory (default: the user cache)")
    mf = msub.add_parser("info", help="print the config of a model set")
    mf.add_argument("model_dir", nargs="?")

    b = sub.add_parser("bench", help="measure latency, throughput, memory and numeric error of "
                                     "each inference backend (writes bench.json + bench.md)")
    bm = b.add_mutually_exclusive_group()
    bm.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    bm.add_argument("--size", choices=["tiny", "small", "base"],
                    help="benchmark a fresh UNTRAINED model of this size (temp dir) instead")
    b.add_argument("--backend", nargs="+", dest="backends", default=["onnxruntime"],
                   choices=list(BACKEND_NAMES), metavar="NAME",
                   help="backends to measure: onnxruntime (default), torch, tensorrt, torch-cuda "
                        "(fp16 + CUDA graphs)")
    b.add_argument("--device", default="cpu", help="torch backend device (cpu, cuda)")
    b.add_argument("--threads", type=positive_int("--threads"),
                   help="ONNX Runtime intra-op / torch threads (default: the library's choice)")
    b.add_argument("--batches", nargs="+", type=positive_int("--batches"), default=[1, 8, 32, 128],
                   metavar="N", help="batch sizes (1 = latency; default 1 8 32 128)")
    b.add_argument("--repeats", type=positive_int("--repeats"), default=30,
                   help="timed runs per batch size after warm-up (default 30)")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs per batch size first")
    b.add_argument("--max-seconds", type=_nonneg_float("--max-seconds"), default=15.0,
                   help="stop a batch size's timed runs after S seconds (at least 3 runs)")
    b.add_argument("--timeout", type=_nonneg_float("--timeout"), default=600.0,
                   help="kill a backend's benchmark process after S seconds")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="output directory for bench.json and bench.md")

    e = sub.add_parser("build-engines", help="build (or reuse cached) TensorRT engines for a model "
                                             "set and check their accuracy (needs TensorRT + GPU)")
    e.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    e.add_argument("--max-batch", type=positive_int("--max-batch"), default=64,
                   help="largest batch the engines accept (default 64)")
    e.add_argument("--opt-batch", type=positive_int("--opt-batch"), default=None,
                   help="batch size TensorRT tunes for (default min(8, max batch))")
    e.add_argument("--workspace-gib", type=_nonneg_float("--workspace-gib"), default=4.0,
                   help="builder workspace memory limit in GiB (default 4)")
    e.add_argument("--fp32-layers", default="auto", metavar="auto|none|norm|NAME,...",
                   help="layers kept in FP32: auto (default: only if plain FP16 misses the "
                        "tolerance), none, norm (normalisation/softmax), or glob patterns")
    e.add_argument("--fp32", action="store_true", help="build FP32 engines (no FP16)")
    e.add_argument("--graphs", default="split", choices=["split", "fused"],
                   help="split: normalizer + classifier engines (default); fused: one engine")
    e.add_argument("--device", type=int, default=0, help="CUDA device index")
    e.add_argument("--force", action="store_true", help="rebuild even if cached engines exist")
    e.add_argument("--out", help="engine cache root (default $NORFACE_RT_ENGINE_CACHE or "
                                 "~/.cache/norface-rt/engines)")
    e.add_argument("--no-check", action="store_true", help="skip the accuracy check")
    return p


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _make_sinks(args: argparse.Namespace, n_sources: int) -> list[Any]:
    from norface_rt.sinks.files import CsvSink, JsonlSink

    sinks: list[Any] = []
    for path in (args.jsonl, args.csv, args.overlay):
        if path:  # asking for out/results.csv means "make out/ if needed"
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if args.zmq and args.zmq.lower() != "none":
        from norface_rt.sinks.zmq_pub import ZmqPublisher

        pub = ZmqPublisher(args.zmq, sndhwm=args.sndhwm, allow_remote=args.allow_remote)
        sinks.append(pub)
        if args.wait_subscribers > 0:
            if not pub.wait_for_subscribers(args.wait_subscribers, args.wait_timeout):
                log.warning("only some of %d subscribers connected within %.1f s; continuing",
                            args.wait_subscribers, args.wait_timeout)
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl))
    if args.csv:
        sinks.append(CsvSink(args.csv))
    if args.overlay:
        from norface_rt.sinks.overlay import MultiStreamOverlaySink

        sinks.append(MultiStreamOverlaySink(args.overlay, multiple=n_sources > 1))
    if args.show:
        from norface_rt.sinks.overlay import ShowSink

        sinks.append(ShowSink())
    return sinks


def cmd_run(args: argparse.Namespace) -> int:
    from norface_rt.app import PipelineOptions, create_pipeline
    from norface_rt.paths import ModelNotFoundError

    opts = PipelineOptions(
        sources=args.sources, stream_ids=args.stream_ids, model_dir=args.model_dir,
        landmarker=args.landmarker, backend=args.backend, device=args.device, threads=args.threads,
        max_faces=args.max_faces, max_batch=args.max_batch, queue_size=args.queue_size,
        realtime=args.realtime, loop=args.loop, stats_interval=args.stats_interval,
        tiling=args.tiling, fused=args.fused, device_align=args.device_align)
    sinks: list[Any] = []
    try:
        opts.validate()
        sinks = _make_sinks(args, len(args.sources))
        pipe = create_pipeline(opts, sinks)
    except (ModelNotFoundError, FileNotFoundError, ValueError, RuntimeError) as exc:
        for s in sinks:
            s.close()
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    if not pipe.backend.config.trained:
        print("norface-rt: WARNING: this model is UNTRAINED (random weights); results are flagged "
              "'untrained' and carry no meaning.", file=sys.stderr)

    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        totals = [getattr(s, "total_frames", None) for s in pipe.sources]
        total = sum(totals) if all(t for t in totals) and not args.loop else None
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
            if any(getattr(s, "quit_requested", False) for s in pipe.sinks):
                break  # q / Esc in the --show window
    except Exception as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        pipe.stop(timeout=5.0)
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


def cmd_listen(args: argparse.Namespace) -> int:
    from norface_rt.sinks.listen import run_listen

    return int(run_listen(args.endpoint, out=args.out, fmt=args.format, topics=args.topics,
                          count=args.count, until_eos=args.until_eos, timeout=args.timeout) or 0)


def cmd_normalize(args: argparse.Namespace) -> int:
    from norface_rt.normalize import normalize_media
    from norface_rt.paths import ModelNotFoundError

    try:
        rep = normalize_media(args.input, args.out, model_dir=args.model_dir,
                              landmarker=args.landmarker, max_faces=args.max_faces,
                              scale=args.scale)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    print(f"{rep.frames} frame(s), {rep.faces} face(s); wrote {len(rep.files)} file(s) to {args.out}")
    if rep.error:
        print(f"norface-rt: the input ended with an error: {rep.error}", file=sys.stderr)
        return 1
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "init-untrained":
        from norface_rt.export import init_untrained

        out = init_untrained(Path(args.out_dir), size=args.size, seed=args.seed)
        print(f"wrote an UNTRAINED {args.size} model set to {out} (results will be flagged untrained)")
        return 0
    if args.models_command == "download":
        from norface_rt.download import download_landmarker

        path = download_landmarker(Path(args.dest) if args.dest else None)
        print(f"MediaPipe face landmarker at {path}")
        return 0
    if args.models_command == "info":
        from norface_rt.config import ModelConfig
        from norface_rt.paths import resolve_model_dir

        d = resolve_model_dir(args.model_dir)
        cfg = ModelConfig.load(d / "config.json")
        print(f"model set: {d}")
        print(cfg.to_json())
        return 0
    raise AssertionError(args.models_command)


def cmd_bench(args: argparse.Namespace) -> int:
    from norface_rt.bench import BenchOptions, bench_untrained, run_bench, write_report
    from norface_rt.paths import ModelNotFoundError, resolve_model_dir

    try:
        opts = BenchOptions(model_dir=Path("."), backends=list(dict.fromkeys(args.backends)),
                            batches=args.batches, repeats=args.repeats, warmup=args.warmup,
                            max_seconds=args.max_seconds, device=args.device,
                            threads=args.threads, seed=args.seed, timeout=args.timeout)
        opts.validate()
        if args.size:
            report = bench_untrained(args.size, opts)
        else:
            opts.model_dir = resolve_model_dir(args.model_dir)
            report = run_bench(opts)
    except (ModelNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    j, md = write_report(report, args.out)
    print(md.read_text())
    print(f"wrote {j} and {md}")
    if not report["model"]["trained"]:
        print("norface-rt: note: the model is UNTRAINED; speed is that of a trained model of the "
              "same size, the outputs mean nothing.", file=sys.stderr)
    failed = [r for r in report["backends"] if r["status"].startswith("error")]
    for r in failed:
        print(f"norface-rt: backend {r['backend']} failed: {r['status']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_build_engines(args: argparse.Namespace) -> int:
    from engines.build import TensorRTUnavailable, build_engines, check_accuracy, import_tensorrt
    from norface_rt.paths import ModelNotFoundError, resolve_model_dir

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    fl = args.fp32_layers.strip()
    fp32_layers: str | list[str] | None = (
        None if fl == "none" else fl if fl in ("auto", "norm")
        else [p.strip() for p in fl.split(",") if p.strip()])
    try:
        model_dir = resolve_model_dir(args.model_dir)
        es = build_engines(model_dir, out_dir=args.out, max_batch=args.max_batch,
                           opt_batch=args.opt_batch, fp16=not args.fp32,
                           workspace_gib=args.workspace_gib, fp32_layers=fp32_layers,
                           force=args.force, graphs=args.graphs, device=args.device)
    except (ModelNotFoundError, FileNotFoundError, ValueError, TensorRTUnavailable) as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"norface-rt: build failed: {exc}", file=sys.stderr)
        return 1
    print(f"cache key: {es.key}")
    print(f"engines ({'cache hit' if es.cache_hit else 'built'}): {es.directory}")
    for graph, path in es.engines.items():
        print(f"  {graph}: {path}")
    prec = es.precision
    print(f"precision: {prec.get('choice')}"
          + "".join(f"; {g}: {len(v)} layer(s) in FP32" for g, v in prec.get("fp32_layers", {}).items()))
    for cand, errs in prec.get("errors", {}).items():
        print(f"  {cand} vs ONNX Runtime fp32: " + ", ".join(f"{k} {v:.4g}" for k, v in errs.items()))
    if args.no_check:
        return 0
    report = check_accuracy(es, model_dir, device=args.device)
    print(report.summary())
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "listen":
            return cmd_listen(args)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "normalize":
            return cmd_normalize(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "build-engines":
            return cmd_build_engines(args)
    except FileNotFoundError as exc:
        print(f"norface-rt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
