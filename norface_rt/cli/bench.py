"""``norface-rt bench``: latency, throughput, memory and numeric error of each backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from norface_rt.backends.registry import backend_spec
from norface_rt.cli.args import add_command, add_options, fail, options_from
from norface_rt.config import SIZES
from norface_rt.tools.bench import BenchOptions
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    b = add_command(sub, "bench", help="measure latency, throughput, memory and numeric error of "
                                       "each inference backend (writes bench.json + bench.md)")
    bm = b.add_mutually_exclusive_group()
    bm.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    bm.add_argument("--size", choices=list(SIZES),
                    help="benchmark a fresh UNTRAINED model of this size (temp dir) instead")
    add_options(b, BenchOptions)  # the measurement's options: one declaration, BenchOptions
    b.add_argument("--out", required=True, help="output directory for bench.json and bench.md")


def _prepare_engines(model_dir: Path) -> None:
    """TensorRT engines are built here, before the timed child processes, by the CLI (the only
    caller of the builder); without TensorRT the child reports the backend as not available."""
    from norface_rt.backends.tensorrt import TensorRTUnavailable
    from norface_rt.cli.build_engines import ensure_engines

    try:
        ensure_engines(model_dir)
    except TensorRTUnavailable:
        pass


def run(args: argparse.Namespace) -> int:
    from norface_rt.paths import resolve_model_dir
    from norface_rt.tools.bench import bench_untrained, run_bench, write_report

    try:
        opts = options_from(BenchOptions, args, model_dir=Path("."))
        opts.backends = list(dict.fromkeys(opts.backends))
        opts.validate()
        prepare = (_prepare_engines
                   if any(backend_spec(b).builds_engines for b in opts.backends) else None)
        if args.size:
            report = bench_untrained(args.size, opts, prepare=prepare)
        else:
            opts.model_dir = resolve_model_dir(args.model_dir)
            report = run_bench(opts, prepare=prepare)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        return fail(str(exc))
    j, md = write_report(report, args.out)
    print(md.read_text())
    print(f"wrote {j} and {md}")
    if not report["model"]["trained"]:
        print("norface-rt: note: the model is UNTRAINED; speed is that of a trained model of the "
              "same size, the outputs mean nothing.", file=sys.stderr)
    failed = [r for r in report["backends"] if r["status"].startswith("error")]
    for r in failed:
        print(f"norface-rt: backend {r['backend']} failed: {r['status']}", file=sys.stderr)
    return ExitCode.FAILED if failed else ExitCode.OK
