"""Model-only speed per backend (no decoding, no face detection): latency at batch 1 and throughput
at batches 8 and 32 on the default-size model, each with its numeric error against the PyTorch
fp32 reference in ``extra_info`` (a fast backend that computes something else is no win).

Run: python -m pytest benchmarks/test_model_bench.py -q --benchmark-columns=median,min,max,rounds
The full report with memory and batch 128 is ``norface-rt bench`` (norface_rt/tools/bench.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import median_seconds, timed

from norface_rt.backends import Backend, backend_spec
from norface_rt.config import ModelConfig
from norface_rt.pipeline.factory import open_backend
from norface_rt.reference import make_crops, make_geometry, max_abs_errors, reference_outputs

BATCHES = (1, 8, 32)
# Rounds per batch size: keeps each benchmark well under ~20 s on a shared 2-core CPU.
ROUNDS = {1: 20, 8: 8, 32: 4}
SEED = 0


@pytest.fixture(scope="module")
def model_config(default_model_dir: Path) -> ModelConfig:
    return ModelConfig.load(default_model_dir / "config.json")


@pytest.fixture(scope="module")
def crops(model_config: ModelConfig) -> dict[int, np.ndarray]:
    return {b: make_crops(b, model_config.img_size, SEED) for b in BATCHES}


@pytest.fixture(scope="module")
def geometry(model_config: ModelConfig) -> dict[int, np.ndarray | None]:
    return {b: make_geometry(b, model_config, SEED) for b in BATCHES}


@pytest.fixture(scope="module")
def reference(default_model_dir: Path, crops: dict[int, np.ndarray],
              geometry: dict[int, np.ndarray | None]) -> dict[int, dict[str, np.ndarray]]:
    return reference_outputs(default_model_dir, crops, geometry)


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def backend(request: pytest.FixtureRequest, default_model_dir: Path) -> Iterator[Backend]:
    b = open_backend(default_model_dir, request.param)
    yield b
    b.close()


@pytest.mark.parametrize("batch", BATCHES)
def test_model_speed(benchmark, backend: Backend, batch: int, crops: dict[int, np.ndarray],
                     geometry: dict[int, np.ndarray | None],
                     reference: dict[int, dict[str, np.ndarray]]) -> None:
    """batch 1 = latency per call; larger = throughput (faces/s from the median)."""
    x, geo = crops[batch], geometry[batch]
    errors = max_abs_errors(backend.infer(x, geometry=geo), reference[batch])
    times: list[float] = []
    result = benchmark.pedantic(timed(backend.infer, times), args=(x,), kwargs={"geometry": geo},
                                rounds=ROUNDS[batch], iterations=1, warmup_rounds=2)
    assert len(result) == batch
    median = median_seconds(benchmark, times)
    benchmark.extra_info.update({
        "backend": backend.name, "batch": batch, "model_id": backend.config.model_id,
        "faces_per_s_median": round(batch / median, 2),
        "max_abs_err_vs_torch_fp32": {k: float(f"{v:.3g}") for k, v in errors.items()},
    })
    if backend_spec(backend.name).extra == "torch":
        import torch

        # Matters on a loaded 2-core CPU: torch's default 2 OpenMP threads can be ~20x slower at
        # batch 1 than 1 thread when another process competes for the cores (see docs/benchmarks.md).
        benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    print(f"\n{backend.name} batch {batch}: {median * 1e3:.1f} ms median, "
          f"{batch / median:.1f} faces/s; max abs err vs torch fp32 {errors}")
    # Sanity, not a speed target: the backend must compute the same model as the reference.
    assert max(errors.values()) < 1e-2, errors
