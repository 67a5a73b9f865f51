"""One edge process of the Triton scaling benchmark (benchmarks/test_triton_bench.py).

Loads real face crops and, for a model with a geometry input, their geometry (an .npz the
benchmark wrote), opens a backend (``triton`` against a server
URL, or ``onnxruntime`` in-process with one intra-op thread), waits for the common start time so
all edges start together, then sends batches of ``--batch`` faces for ``--seconds`` and writes
the number of faces and every call's latency as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from norface_rt.backends import BACKENDS, backend_spec, connect_backend
from norface_rt.pipeline.factory import open_backend


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crops", required=True)
    ap.add_argument("--backend", choices=list(BACKENDS), required=True)
    ap.add_argument("--target", required=True, help="grpc:// URL (triton) or model set (onnxruntime)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--start-at", type=float, required=True, help="time.time() to start at")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    faces = np.load(a.crops)
    crops = faces["crops"]
    geometry = faces["geometry"] if "geometry" in faces.files else None
    if backend_spec(a.backend).remote:
        be = connect_backend(a.target, a.backend)
    else:
        be = open_backend(a.target, a.backend, threads=1)
    # warm-up: connection, shared memory, ORT arenas
    be.infer(crops[: a.batch], geometry=None if geometry is None else geometry[: a.batch])
    time.sleep(max(0.0, a.start_at - time.time()))
    lat: list[float] = []
    done = 0
    i = 0
    t_end = time.perf_counter() + a.seconds
    while time.perf_counter() < t_end:
        idx = [(i + k) % len(crops) for k in range(a.batch)]
        t0 = time.perf_counter()
        be.infer(crops[idx], geometry=None if geometry is None else geometry[idx])
        lat.append(time.perf_counter() - t0)
        done += a.batch
        i += a.batch
    be.close()
    with open(a.out, "w") as f:
        json.dump({"faces": done, "seconds": a.seconds, "latencies": lat}, f)


if __name__ == "__main__":
    main()
