"""Scaling on Triton: 1, 2 and 4 edge processes against one local Triton server versus the same
edges each running the model in-process (ONNX Runtime, one thread each).

Each edge sends batches of 4 real face crops (uint8, as ``--backend triton`` does) in a closed
loop for a fixed time; reported per configuration: faces/s of all edges together, p50/p95
latency of one call (and the added latency of Triton: its p50/p95 minus the in-process ones),
and from Triton's statistics extension the server time per request (queue + compute of the
ensemble) and the average batch the dynamic batcher formed.

On a 2-core machine this measures contention as much as scaling: the edges, the server and its
Python-backend stubs share the same two cores (docs/scaling.md says so next to the figures).

    python -m pytest benchmarks/test_triton_bench.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from norface_rt.paths import packaged_model_dir

HERE = Path(__file__).resolve().parent
EDGES = (1, 2, 4)
BATCH = 4


@pytest.fixture(scope="module")
def crops_file(media_dir: Path, landmarker_path: Path, tmp_path_factory) -> Path:  # noqa: ANN001
    """Real aligned faces from the first frames of a video with a face (MediaPipe + aligner), and
    their geometry input when the packaged model takes one, in one .npz."""
    import av

    from norface_rt.model_set import load_config
    from norface_rt.flags import default_for
    from norface_rt.pipeline.factory import build_face_stage
    from norface_rt.pipeline.options import PipelineOptions
    from norface_rt.types import FramePacket

    cfg = load_config(packaged_model_dir())
    stage = build_face_stage(landmarker_path, cfg, video=True,
                             max_faces=default_for(PipelineOptions, "max_faces"))
    crops, geometry = [], []
    with av.open(str(media_dir / "single_face.mp4")) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= 32:
                break
            ff = stage.process(FramePacket.from_av_frame(frame, "bench", i))
            crops.append(ff.crops)
            geometry.append(ff.geometry)
    stage.close()
    path = tmp_path_factory.mktemp("crops") / "faces.npz"
    arrays = {"crops": np.concatenate(crops)}
    if cfg.geometry_dim:
        arrays["geometry"] = np.concatenate(geometry)
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def server(start_triton, tmp_path_factory):  # noqa: ANN001, ANN201
    s = start_triton(tmp_path_factory.mktemp("triton-bench"), {"norface": packaged_model_dir()},
                     threads=0, max_batch=32, preferred_batch=(8, 16, 32), queue_delay_us=1000)
    yield s
    s.stop()


def _edges(n: int, backend: str, target: str, crops: Path, seconds: float, tmp: Path) -> dict:
    start_at = time.time() + 6.0  # every edge loaded and warmed up before the common start
    outs = [tmp / f"{backend}-{n}-{i}.json" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "triton_edge.py"), "--crops", str(crops),
                               "--backend", backend, "--target", target, "--batch", str(BATCH),
                               "--seconds", str(seconds), "--start-at", str(start_at),
                               "--out", str(o)]) for o in outs]
    for p in procs:
        assert p.wait(seconds + 120) == 0
    res = [json.loads(o.read_text()) for o in outs]
    lat = np.concatenate([r["latencies"] for r in res]) * 1000.0
    return {"faces_per_s": sum(r["faces"] for r in res) / seconds,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "calls": int(lat.size)}


def _server_stats(server) -> dict[str, float]:  # noqa: ANN001
    """Cumulative requests and time of the ensemble, queue time of its three models (requests
    wait in the composing models' dynamic batchers, not in the ensemble), executions and faces
    of the normalizer (its average batch)."""
    ens = server.statistics("norface")["model_stats"][0]["inference_stats"]
    queue_ns = sum(int(server.statistics(f"norface_{m}")["model_stats"][0]["inference_stats"]
                       ["queue"]["ns"]) for m in ("preprocess", "normalizer", "classifier"))
    norm = server.statistics("norface_normalizer")["model_stats"][0]
    return {"requests": int(ens["success"]["count"]), "total_ns": int(ens["success"]["ns"]),
            "queue_ns": queue_ns,
            "norm_exec": int(norm["execution_count"]), "norm_faces": int(norm["inference_count"])}


@pytest.mark.parametrize("edges", EDGES)
def test_triton_scaling(benchmark, server, crops_file: Path, edges: int, tmp_path: Path,  # noqa: ANN001
                        request: pytest.FixtureRequest) -> None:
    disabled = request.config.getoption("benchmark_disable", False)
    seconds = 2.0 if disabled else 8.0
    inproc = _edges(edges, "onnxruntime", str(packaged_model_dir()), crops_file, seconds, tmp_path)
    before = _server_stats(server)

    def run() -> dict:
        return _edges(edges, "triton", server.grpc_url, crops_file, seconds, tmp_path)

    triton = benchmark.pedantic(run, rounds=1, iterations=1)
    after = _server_stats(server)
    d = {k: after[k] - before[k] for k in after}
    server_ms = d["total_ns"] / max(d["requests"], 1) / 1e6
    row = {
        "edges": edges, "batch_per_request": BATCH,
        "inprocess_faces_per_s": round(inproc["faces_per_s"], 1),
        "triton_faces_per_s": round(triton["faces_per_s"], 1),
        "inprocess_p50_ms": round(inproc["p50_ms"], 1), "inprocess_p95_ms": round(inproc["p95_ms"], 1),
        "triton_p50_ms": round(triton["p50_ms"], 1), "triton_p95_ms": round(triton["p95_ms"], 1),
        "added_p50_ms": round(triton["p50_ms"] - inproc["p50_ms"], 1),
        "added_p95_ms": round(triton["p95_ms"] - inproc["p95_ms"], 1),
        "server_ms_per_request": round(server_ms, 1),
        "server_queue_ms_per_request": round(d["queue_ns"] / max(d["requests"], 1) / 1e6, 1),
        "server_avg_batch_faces": round(d["norm_faces"] / max(d["norm_exec"], 1), 1),
    }
    benchmark.extra_info.update(row)
    print("\nTRITON-SCALING " + json.dumps(row))
    assert d["requests"] >= triton["calls"]  # every call reached the server
