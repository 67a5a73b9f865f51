"""``norface-rt build-engines``: build (or reuse) a model set's TensorRT engines and gate their
accuracy. The only module of the package, with ``run`` and ``bench`` through
:func:`ensure_engines`, that imports the engine builder (:mod:`norface_rt.engines`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from norface_rt.cli.args import add_command, fail, nonneg_float, positive_int
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    e = add_command(sub, "build-engines", help="build (or reuse cached) TensorRT engines for a "
                                               "model set and check their accuracy (needs "
                                               "TensorRT + GPU)")
    e.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache)")
    e.add_argument("--max-batch", type=positive_int("--max-batch"), default=64,
                   help="largest batch the engines accept (default 64)")
    e.add_argument("--opt-batch", type=positive_int("--opt-batch"), default=None,
                   help="batch size TensorRT tunes for (default min(8, max batch))")
    e.add_argument("--workspace-gib", type=nonneg_float("--workspace-gib"), default=4.0,
                   help="builder workspace memory limit in GiB (default 4)")
    e.add_argument("--fp32-layers", default="auto", metavar="auto|none|norm|NAME,...",
                   help="layers kept in FP32: auto (default: only if plain FP16 misses the "
                        "tolerance), none, norm (normalisation/softmax), or glob patterns")
    e.add_argument("--fp32", action="store_true", help="build FP32 engines (no FP16)")
    e.add_argument("--graphs", default="split", choices=["split", "fused"],
                   help="split: normalizer + classifier engines (the only kind; 'fused' is "
                        "refused with the reason)")
    e.add_argument("--device", type=int, default=0, help="CUDA device index")
    e.add_argument("--force", action="store_true", help="rebuild even if cached engines exist")
    e.add_argument("--out", help="engine cache root (default $NORFACE_RT_ENGINE_CACHE or "
                                 "<user cache>/engines)")
    e.add_argument("--no-check", action="store_true", help="skip the accuracy check")


def ensure_engines(model_dir: str | os.PathLike[str], *, device: int | str = 0) -> Path:
    """Build the engines ``--backend tensorrt`` loads by default (a cache hit when they exist);
    returns their directory. TensorRTUnavailable (an ImportError) says how to install TensorRT."""
    from norface_rt.engines import build_engines

    return build_engines(model_dir, device=device).directory


def run(args: argparse.Namespace) -> int:
    from norface_rt.backends.tensorrt import TensorRTUnavailable, import_tensorrt
    from norface_rt.engines.build import build_engines, check_accuracy
    from norface_rt.paths import resolve_model_dir

    try:
        import_tensorrt()
    except TensorRTUnavailable as exc:
        return fail(str(exc))
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
    except (FileNotFoundError, ValueError, TensorRTUnavailable) as exc:
        return fail(str(exc))
    except RuntimeError as exc:
        return fail(f"build failed: {exc}", ExitCode.FAILED)
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
        return ExitCode.OK
    report = check_accuracy(es, model_dir, device=args.device)
    print(report.summary())
    return ExitCode.OK if report.passed else 1
