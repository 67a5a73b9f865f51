"""TensorRT on a real GPU: build the tiny model set's engines, run them, gate their accuracy,
and check the cache (a second build is a hit; other options or another model rebuild).

Skipped with a reason where TensorRT or a CUDA GPU is missing (see docs/gpu.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import onnx
import pytest

from engine_helpers import gpu_skip_reason

if TYPE_CHECKING:
    from norface_rt.backends.tensorrt import TrtBackend
    from norface_rt.backends.trt_cache import EngineSet
    from norface_rt.backends.torch_backend import TorchBackend

_REASON = gpu_skip_reason()
pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

MAX_BATCH = 8
REPO = Path(__file__).resolve().parents[2]


def crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, n]).integers(0, 256, size=(n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def built(tiny_model_dir: Path, root: Path) -> EngineSet:
    from norface_rt.engines.build import build_engines

    return build_engines(tiny_model_dir, out_dir=root, max_batch=MAX_BATCH, fp32_layers="auto")


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path, built: EngineSet) -> Iterator[TrtBackend]:
    from norface_rt.backends.tensorrt import TrtBackend

    b = TrtBackend(tiny_model_dir, max_batch=MAX_BATCH, engine_dir=built.directory)
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> Iterator[TorchBackend]:
    from norface_rt.backends.torch_backend import TorchBackend

    b = TorchBackend(tiny_model_dir, device="cpu")
    yield b
    b.close()


def test_build_records_engines_precision_and_timing_cache(built: EngineSet, root: Path) -> None:
    assert not built.cache_hit
    assert list(built.engines) == ["normalizer", "classifier"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in built.engines.values())
    assert built.manifest_path.is_file()
    prec = built.precision
    assert prec["choice"] in ("fp16", "fp16+fp32-norm")
    assert "fp16" in prec["errors"]  # "auto" always measures plain FP16 first
    if prec["choice"] == "fp16+fp32-norm":
        assert prec["fp32_layers"]["normalizer"] and "fp16+fp32-norm" in prec["errors"]
    assert list(root.glob("timing-*.cache"))


@pytest.mark.parametrize("n", [1, 7, MAX_BATCH + 3])
def test_outputs_match_pytorch_fp32(backend: TrtBackend, reference: TorchBackend, n: int) -> None:
    from norface_rt.engines.build import TOLERANCES

    x = crops(n)
    got, ref = backend.infer(x, want_normalized=True), reference.infer(x, want_normalized=True)
    assert len(got) == n and got.normalized is not None and got.normalized.shape == (n, 112, 112, 3)
    for k, tol in TOLERANCES.items():
        err = float(np.max(np.abs(getattr(got, k) - getattr(ref, k))))
        assert err <= tol, f"{k}: max abs err {err} > {tol} at n={n}"
    assert set(got.timings) == {"normalize", "classify"}
    assert all(v > 0 for v in got.timings.values())
    assert np.allclose(got.emotion_prob.sum(axis=1), 1.0, atol=1e-2)


def test_empty_batch_and_bad_input(backend: TrtBackend) -> None:
    out = backend.infer(np.zeros((0, 112, 112, 3), np.uint8))
    assert len(out) == 0 and out.timings == {}
    with pytest.raises(ValueError, match="crops"):
        backend.infer(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="x: expected"):
        backend._forward(np.zeros((2, 3, 64, 64), np.float32))


def test_accuracy_gate_passes(built: EngineSet, tiny_model_dir: Path) -> None:
    from norface_rt.engines.build import check_accuracy

    report = check_accuracy(built, tiny_model_dir, n=16)
    assert report.passed, report.summary()


def test_cache_hit_then_rebuild_on_changed_options(built: EngineSet, tiny_model_dir: Path,
                                                    root: Path) -> None:
    from norface_rt.engines.build import build_engines

    again = build_engines(tiny_model_dir, out_dir=root, max_batch=MAX_BATCH, fp32_layers="auto")
    assert again.cache_hit and again.directory == built.directory and again.key == built.key
    other = build_engines(tiny_model_dir, out_dir=root, max_batch=MAX_BATCH, fp32_layers="norm",
                          workspace_gib=1.0)
    assert not other.cache_hit and other.directory != built.directory
    assert other.precision["choice"] == "fp16+fp32-norm"
    forced = build_engines(tiny_model_dir, out_dir=root, max_batch=MAX_BATCH, fp32_layers="norm",
                           workspace_gib=1.0, force=True)
    assert not forced.cache_hit and forced.directory == other.directory


def test_engines_of_another_model_are_refused(built: EngineSet, tiny_model_dir: Path,
                                              tmp_path: Path) -> None:
    from norface_rt.backends.tensorrt import TrtBackend

    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    proto = onnx.load(str(changed / "normalizer.onnx"))
    proto.doc_string += " (retrained)"
    onnx.save(proto, str(changed / "normalizer.onnx"))
    with pytest.raises(ValueError, match="other ONNX files"):
        TrtBackend(changed, max_batch=MAX_BATCH, engine_dir=built.directory)
    with pytest.raises(ValueError, match="max_batch must be <="):
        TrtBackend(tiny_model_dir, max_batch=MAX_BATCH * 2, engine_dir=built.directory)


def test_load_backend_uses_the_cache_and_close_frees(built: EngineSet, tiny_model_dir: Path,
                                                     root: Path) -> None:
    from norface_rt.backends import load_backend

    b = load_backend(tiny_model_dir, "tensorrt", max_batch=MAX_BATCH, out_dir=root,
                     fp32_layers="auto")
    assert b.engine_set.cache_hit and b.engine_dir == built.directory  # type: ignore[attr-defined]
    assert len(b.infer(crops(3))) == 3
    b.close()
    b.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        b.infer(crops(2))


def test_cli_build_engines_reports_key_paths_and_accuracy(built: EngineSet, tiny_model_dir: Path,
                                                          root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "norface_rt", "build-engines", "--model-dir",
                          str(tiny_model_dir), "--max-batch", str(MAX_BATCH), "--out", str(root)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    assert f"cache key: {built.key}" in res.stdout
    assert "cache hit" in res.stdout and str(built.engines["normalizer"]) in res.stdout
    assert "PASS" in res.stdout


def test_geometry_model_engines_take_the_third_input(root: Path,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model with the blendshape input builds with a profile for 'geometry', passes the
    accuracy gate on seeded geometry, and refuses a call without it."""
    from norface_rt.backends.tensorrt import TrtBackend
    from norface_rt.engines.build import build_engines, check_accuracy
    from norface_rt.export import init_untrained
    from norface_rt.reference import make_geometry

    geo_dir = init_untrained(tmp_path_factory.mktemp("geo"), size="tiny", seed=6, geometry=True)
    es = build_engines(geo_dir, out_dir=root, max_batch=MAX_BATCH, fp32_layers="auto")
    report = check_accuracy(es, geo_dir, n=16)
    assert report.passed, report.summary()
    with TrtBackend(geo_dir, max_batch=MAX_BATCH, engine_dir=es.directory) as b:
        x = crops(MAX_BATCH + 2)
        geo = make_geometry(len(x), b.config, 0)
        out = b.infer(x, geometry=geo)
        assert len(out) == len(x)
        other = b.infer(x, geometry=np.zeros_like(geo))
        assert float(np.abs(other.emotion_prob - out.emotion_prob).max()) > 1e-4
        with pytest.raises(ValueError, match="consumes"):
            b.infer(x)
