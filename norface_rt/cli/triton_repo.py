"""``norface-rt triton-repo``: write a Triton model repository for a model set."""

from __future__ import annotations

import argparse
from typing import Any

from norface_rt.cli.args import add_command, fail, positive_int
from norface_rt.wire.exits import ExitCode
from norface_rt.wire.names import TRITON_MODEL


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--preferred-batch must be comma-separated integers, "
                                         f"got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--preferred-batch must be sizes >= 1, got {text!r}")
    return sizes


def add_parser(sub: Any) -> None:
    t = add_command(sub, "triton-repo", help="write an NVIDIA Triton model repository for a model "
                                             "set (normalizer, classifier, preprocessing, ensemble)")
    t.add_argument("out", metavar="OUT", help="repository folder (created; other models in it stay)")
    t.add_argument("--model-dir", help="Norface model set (else $NORFACE_RT_MODEL_DIR, user cache, "
                                       "packaged default)")
    t.add_argument("--platform", default="onnxruntime", choices=["onnxruntime", "tensorrt", "python"],
                   help="Triton backend running the graphs: onnxruntime (default), tensorrt (plans "
                        "built where the server runs: OUT/build_plans.sh) or python (ONNX Runtime in "
                        "Triton's Python backend, what `norface-rt triton-server` runs)")
    t.add_argument("--name", default=TRITON_MODEL, help="ensemble name (models are "
                                                        "NAME_preprocess, NAME_normalizer, "
                                                        "NAME_classifier)")
    t.add_argument("--max-batch", type=positive_int("--max-batch"), default=32,
                   help="max_batch_size of every model (default 32)")
    t.add_argument("--preferred-batch", type=_sizes, default=[8, 16, 32], metavar="N,N,...",
                   help="dynamic batcher's preferred batch sizes (default 8,16,32)")
    t.add_argument("--queue-delay-us", type=int, default=1000,
                   help="longest a request waits for a fuller batch, microseconds (default 1000)")
    t.add_argument("--instances", type=positive_int("--instances"), default=1,
                   help="model instances per model (instance group count, default 1)")
    t.add_argument("--kind", choices=["cpu", "gpu"], default=None,
                   help="instance kind (default gpu for onnxruntime/tensorrt, cpu for python)")
    t.add_argument("--threads", type=int, default=0,
                   help="python platform: ONNX Runtime threads per instance (0 = all cores)")
    t.add_argument("--max-queue-size", type=int, default=0,
                   help="requests a model queues before refusing more (edges retry with backoff); "
                        "0 = unbounded (default)")
    t.add_argument("--force", action="store_true",
                   help="replace models of this name that another tool wrote")


def run(args: argparse.Namespace) -> int:
    from norface_rt.paths import resolve_model_dir
    from norface_rt.serving.repository import RepositoryOptions, write_repository

    opts = RepositoryOptions(platform=args.platform, name=args.name, max_batch=args.max_batch,
                             preferred_batch=args.preferred_batch,
                             queue_delay_us=args.queue_delay_us, instances=args.instances,
                             kind=args.kind, threads=args.threads,
                             max_queue_size=args.max_queue_size, force=args.force)
    try:
        opts.validate()
        notes = write_repository(args.out, resolve_model_dir(args.model_dir), opts)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        return fail(str(exc))
    print(f"wrote Triton repository {args.out}: {args.name} (ensemble), {args.name}_preprocess, "
          f"{args.name}_normalizer, {args.name}_classifier [{args.platform}, max batch "
          f"{args.max_batch}, {opts.instances} {opts.instance_kind} instance(s) each]; configs "
          "validated against Triton's model_config.proto")
    for note in notes:
        print(f"todo: {note}")
    return ExitCode.OK
