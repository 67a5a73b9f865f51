"""`norface-rt bench` end to end on the tiny untrained model: a real subprocess, real ONNX Runtime
and PyTorch, a TensorRT request on a machine without TensorRT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# ORT fp32 vs PyTorch fp32 on the same graph: float32 rounding differences only (measured ~1e-4
# at most on the tiny model, mostly in au_intensity, which is scaled up to au_intensity_max).
ORT_TOLERANCE = 1e-3


@pytest.mark.timeout(120)
def test_bench_cli_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "norface_rt", "bench", "--size", "tiny", "--repeats", "3",
         "--warmup", "1", "--batches", "1", "8", "--backend", "onnxruntime", "tensorrt",
         "--out", str(out)],
        capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "bench.json").read_text())
    md = (out / "bench.md").read_text()

    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    for pkg in ("python", "numpy", "onnxruntime", "torch", "mediapipe", "av"):
        assert pkg in report["versions"], pkg
    assert report["versions"]["onnxruntime"]
    assert report["model"]["size"] == "tiny" and report["model"]["trained"] is False
    assert report["settings"]["batches"] == [1, 8]

    by_name = {r["backend"]: r for r in report["backends"]}
    assert set(by_name) == {"onnxruntime", "tensorrt"}
    ort = by_name["onnxruntime"]
    assert ort["status"] == "ok"
    assert [r["batch"] for r in ort["rows"]] == [1, 8]
    for row in ort["rows"]:
        assert row["runs"] == 3
        assert 0 < row["median_ms"] <= row["p95_ms"]
        assert row["faces_per_s"] == pytest.approx(row["batch"] / (row["median_ms"] / 1e3))
        assert set(row["max_abs_err"]) == {"au_prob", "au_intensity", "emotion_prob"}
        for k, err in row["max_abs_err"].items():
            assert 0 <= err < ORT_TOLERANCE, (row["batch"], k, err)
    assert ort["peak_rss_mb"] > 0 and ort["peak_rss_delta_mb"] > 0

    trt = by_name["tensorrt"]
    assert trt["status"].startswith("not available:") and "TensorRT" in trt["status"]
    assert trt["rows"] == []
    assert "| onnxruntime | 8 |" in md and "not available" in md


def test_bench_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "norface_rt", "bench", "--size", "tiny", "--batches", "0",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--batches must be >= 1, got 0" in proc.stderr
