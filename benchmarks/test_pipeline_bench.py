"""End-to-end pipeline speed on this machine (issue: >= 25 frames/s on single_face.mp4 with ONNX
Runtime and the default model; median capture-to-publish latency < 80 ms for a live source).

Run: python -m pytest benchmarks -q --benchmark-columns=median,min,max,rounds
"""

from __future__ import annotations

import statistics
from typing import Any

from norface_rt.app import PipelineOptions, create_pipeline


class LatencySink:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.frames = 0

    def write(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "frame":
            self.frames += 1
            self.latencies.append(msg["emit_time"] - msg["capture_time"])

    def close(self) -> None:
        pass


def _run(shared_dir, model_dir, landmarker, **kw) -> tuple[LatencySink, dict[str, Any]]:
    sink = LatencySink()
    opts = PipelineOptions(sources=[str(shared_dir / "media" / "single_face.mp4")],
                           model_dir=model_dir, landmarker=landmarker, **kw)
    snap = create_pipeline(opts, [sink]).run(timeout=300)
    return sink, snap


def test_file_throughput_single_face(benchmark, shared_dir, default_model_dir, landmarker_path):
    """Whole pipeline, lossless file source: frames/s = 72 / median seconds per run."""
    results: list[dict[str, Any]] = []

    def once() -> None:
        sink, snap = _run(shared_dir, default_model_dir, landmarker_path)
        assert sink.frames == 72
        results.append(snap)

    benchmark.pedantic(once, rounds=5, iterations=1, warmup_rounds=1)
    fps = 72 / benchmark.stats.stats.median
    benchmark.extra_info["frames_per_s_median"] = round(fps, 2)
    last = results[-1]["stages"]
    benchmark.extra_info["stage_p50_ms"] = {k: round(v["p50_ms"], 2) for k, v in last.items()}
    print(f"\nsingle_face.mp4 end to end: {fps:.1f} frames/s (median of 5 runs); "
          f"stage p50 ms: {benchmark.extra_info['stage_p50_ms']}")


def test_live_capture_to_publish_latency(benchmark, shared_dir, default_model_dir, landmarker_path):
    """A live source: the file is paced at its frame rate and handled as live (drop-oldest)."""
    runs: list[LatencySink] = []

    def once() -> None:
        sink, _ = _run(shared_dir, default_model_dir, landmarker_path, realtime=True)
        runs.append(sink)

    benchmark.pedantic(once, rounds=3, iterations=1)
    lat = [x for s in runs for x in s.latencies]
    p50 = statistics.median(lat) * 1000
    p95 = sorted(lat)[int(0.95 * (len(lat) - 1))] * 1000
    benchmark.extra_info["latency_p50_ms"] = round(p50, 2)
    benchmark.extra_info["latency_p95_ms"] = round(p95, 2)
    benchmark.extra_info["frames_delivered"] = [s.frames for s in runs]
    print(f"\nlive (paced) single_face.mp4: capture-to-publish p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
          f"frames delivered per run {[s.frames for s in runs]} of 72")


def test_file_throughput_single_face_fused(benchmark, shared_dir, default_model_dir,
                                           landmarker_path):
    """The same with normalization + classification fused into one ONNX graph (--fused)."""

    def once() -> None:
        sink, _ = _run(shared_dir, default_model_dir, landmarker_path, fused=True)
        assert sink.frames == 72

    benchmark.pedantic(once, rounds=5, iterations=1, warmup_rounds=1)
    fps = 72 / benchmark.stats.stats.median
    benchmark.extra_info["frames_per_s_median"] = round(fps, 2)
    print(f"\nsingle_face.mp4 end to end, fused graph: {fps:.1f} frames/s (median of 5 runs)")
