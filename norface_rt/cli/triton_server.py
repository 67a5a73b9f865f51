"""``norface-rt triton-server``: set up and run the Triton server bundled in nvidia-pytriton.

``setup`` makes the server's own Python environment (numpy<2, ONNX Runtime; the one command
users and CI run, cached, :mod:`norface_rt.serving.env`); ``serve`` runs that server on a
repository written with ``norface-rt triton-repo --platform python`` until Ctrl-C. A GPU
deployment uses NVIDIA's Triton container instead (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from norface_rt.cli.args import add_command, fail
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    t = add_command(sub, "triton-server", help="set up (once) and run the Triton server bundled "
                                               "in nvidia-pytriton (CPU, Python backend)")
    tsub = t.add_subparsers(dest="action", required=True, metavar="COMMAND")
    s = add_command(tsub, "setup", help="create the server's own Python environment (cached)")
    s.add_argument("--env", help="where (default $NORFACE_RT_TRITON_ENV or <user cache>/triton-env)")
    s.add_argument("--python", help="interpreter to base it on (default: this one)")
    s.add_argument("--force", action="store_true", help="re-create it even when up to date")
    v = add_command(tsub, "serve", help="serve a repository until Ctrl-C")
    v.add_argument("repository", metavar="REPO",
                   help="model repository written by `norface-rt triton-repo --platform python`")
    v.add_argument("--env", help="server environment (default: the one setup made)")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; 0.0.0.0 exposes it)")
    v.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (what edges connect to)")
    v.add_argument("--http-port", type=int, default=8000, help="HTTP port (health, model control)")
    v.add_argument("--metrics-port", type=int, default=8002, help="Triton's own Prometheus port")
    v.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")


def run(args: argparse.Namespace) -> int:
    from norface_rt.serving.env import ServerEnv, setup_env
    from norface_rt.serving.server import TritonServer

    if args.action == "setup":
        try:
            env = setup_env(args.env, force=args.force, python=args.python)
        except RuntimeError as exc:
            return fail(str(exc), ExitCode.FAILED)
        print(f"Triton server environment ready: {env.root} (tritonserver {env.tritonserver}, "
              f"Python {env.python_version})")
        return ExitCode.OK
    try:
        server = TritonServer(args.repository, ServerEnv.load(args.env), host=args.host,
                              grpc_port=args.grpc_port, http_port=args.http_port,
                              metrics_port=args.metrics_port)
    except FileNotFoundError as exc:
        return fail(str(exc))
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    old_int = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        server.start(args.timeout)
        print(f"serving {server.repository}: {server.grpc_url} (edges: --backend triton "
              f"--triton-url {server.grpc_url}), statistics {server.http_url}/v2/models/stats, "
              f"metrics {server.metrics_url}; log {server.log_path}", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                return fail(f"tritonserver exited; its log ends with:\n{server.log_tail()}", ExitCode.FAILED)
    except (RuntimeError, TimeoutError) as exc:
        return fail(str(exc), ExitCode.FAILED)
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    return ExitCode.OK
