"""ONNX Runtime and PyTorch backends on a real (untrained, tiny) model set."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from norface_rt.backends import BACKEND_NAMES, load_backend
from norface_rt.backends.onnx_backend import OrtBackend, default_providers
from norface_rt.config import ModelConfig


def test_ort_backend_outputs(model_dir: Path, crops: np.ndarray) -> None:
    be = load_backend(model_dir, intra_op_threads=1)
    assert isinstance(be, OrtBackend) and be.name == "onnxruntime"
    assert be.config == ModelConfig.load(model_dir / "config.json") and not be.config.trained
    assert "CPUExecutionProvider" in be.providers
    out = be.infer(crops, want_normalized=True)
    assert out.normalized is not None and out.normalized.shape == (3, 112, 112, 3)
    assert out.normalized.dtype == np.uint8
    assert out.au_prob.shape == (3, 18) and out.au_prob.dtype == np.float32
    assert np.all((out.au_prob > 0) & (out.au_prob < 1))
    assert np.all((out.au_intensity >= 0) & (out.au_intensity <= be.config.au_intensity_max))
    np.testing.assert_allclose(out.emotion_prob.sum(1), 1.0, atol=1e-5)
    assert be.infer(crops).normalized is None


def test_batch_rows_are_independent(model_dir: Path, crops: np.ndarray) -> None:
    be = load_backend(model_dir)
    batch = be.infer(crops)
    for i in range(len(crops)):
        one = be.infer(crops[i:i + 1])
        np.testing.assert_allclose(one.au_prob[0], batch.au_prob[i], atol=1e-5)
        np.testing.assert_allclose(one.emotion_prob[0], batch.emotion_prob[i], atol=1e-5)


def test_ort_and_torch_backends_agree(model_dir: Path, crops: np.ndarray) -> None:
    ort_out = load_backend(model_dir, "onnxruntime").infer(crops, want_normalized=True)
    tb = load_backend(model_dir, "torch")
    assert tb.name == "torch" and tb.config == ModelConfig.load(model_dir / "config.json")
    t_out = tb.infer(crops, want_normalized=True)
    assert np.abs(ort_out.au_prob - t_out.au_prob).max() < 1e-4
    assert np.abs(ort_out.emotion_prob - t_out.emotion_prob).max() < 1e-4
    assert np.abs(ort_out.au_intensity - t_out.au_intensity).max() < 1e-3
    assert np.abs(ort_out.normalized.astype(int) - t_out.normalized).max() <= 1  # uint8 rounding


def test_ort_backend_accepts_onnx_path_and_rejects_bad_input(legacy_model_dir: Path, model_dir: Path,
                                                             tmp_path: Path) -> None:
    be = OrtBackend(legacy_model_dir / "norface.onnx")
    with pytest.raises(ValueError, match=r"crops: expected \(N, 112, 112, 3\) uint8, got \(2, 64, 64, 3\) float32"):
        be.infer(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        OrtBackend(tmp_path)
    with pytest.raises(ValueError, match="not available"):
        OrtBackend(model_dir, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="intra_op_threads must be >= 0"):
        OrtBackend(model_dir, intra_op_threads=-1)
    assert default_providers()[-1] == "CPUExecutionProvider"


def test_config_json_must_match_embedded_config(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(model_dir, copy)
    cfg = ModelConfig.load(copy / "config.json")
    ModelConfig.from_dict({**cfg.to_dict(), "trained": True}).save(copy / "config.json")
    with pytest.raises(ValueError, match=r"disagrees with the config embedded .* in fields \['trained'\]"):
        OrtBackend(copy)


def test_load_backend_errors(model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"name must be one of \['onnxruntime', 'torch', 'tensorrt', 'torch-cuda', 'triton'\], got 'tflite'"):
        load_backend(model_dir, "tflite")
    assert BACKEND_NAMES == ("onnxruntime", "torch", "tensorrt", "torch-cuda", "triton")
    with pytest.raises(TypeError):
        load_backend(model_dir, "onnxruntime", no_such_option=1)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_missing_is_a_clear_error(model_dir: Path) -> None:
    with pytest.raises(RuntimeError, match=r"TensorRT is optional.*norface-rt\[tensorrt\]"):
        load_backend(model_dir, "tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_torch_cuda_without_gpu_is_a_clear_error(model_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="no usable CUDA"):
        load_backend(model_dir, "torch", device="cuda")
    with pytest.raises(ValueError, match="fp16=True needs device='cuda'"):
        load_backend(model_dir, "torch", fp16=True)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        load_backend(model_dir, "torch", device="mps")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")
def test_torch_cuda_fp16_close_to_cpu(model_dir: Path, crops: np.ndarray) -> None:
    cpu = load_backend(model_dir, "torch").infer(crops)
    gpu = load_backend(model_dir, "torch", device="cuda").infer(crops)
    assert np.abs(cpu.au_prob - gpu.au_prob).max() < 2e-2
    assert np.abs(cpu.emotion_prob - gpu.emotion_prob).max() < 2e-2



# ----------------------------------------------------------------------------- issue 21, point 6
import onnxruntime as ort  # noqa: E402

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_ort_device_cpu_and_bad_values(model_dir: Path, crops: np.ndarray) -> None:
    be = load_backend(model_dir, "onnxruntime", device="cpu")
    assert be.providers == ["CPUExecutionProvider"] and be.describe()["device"] == "cpu"
    assert be.infer(crops).au_prob.shape[0] == 3
    with pytest.raises(ValueError, match=r"--device: expected cpu, cuda or cuda:N .* got 'gpu0'"):
        load_backend(model_dir, "onnxruntime", device="gpu0")


@pytest.mark.skipif(HAS_ORT_CUDA, reason="ONNX Runtime's CUDA build is installed here")
def test_ort_cuda_device_without_the_cuda_build_says_how_to_install_it(model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"--device cuda:1: this ONNX Runtime has no "
                                         r"CUDAExecutionProvider.*pip uninstall -y onnxruntime "
                                         r"onnxruntime-gpu && pip install \"onnxruntime-gpu"):
        load_backend(model_dir, "onnxruntime", device="cuda:1")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs ONNX Runtime's CUDA build (onnxruntime-gpu "
                    "instead of onnxruntime) and an NVIDIA GPU; README, 'GPU'")
def test_ort_on_a_cuda_device_agrees_with_the_cpu(model_dir: Path, crops: np.ndarray) -> None:
    gpu = load_backend(model_dir, "onnxruntime", device="cuda:0")
    cpu = load_backend(model_dir, "onnxruntime", device="cpu")
    assert gpu.describe()["device"] == "cuda:0" and gpu.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.infer(crops).au_prob, cpu.infer(crops).au_prob, atol=1e-3)


def test_no_extra_installs_onnxruntimes_cuda_build_beside_the_cpu_build() -> None:
    """ONNX Runtime's CUDA build must replace the CPU build (a dependency): an extra that adds it
    installs both, which ONNX Runtime documents as broken (the old [gpu] extra did)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    assert any(d.startswith("onnxruntime>") for d in deps)
    for name, reqs in pyproject["project"]["optional-dependencies"].items():
        assert not [r for r in reqs if r.startswith("onnxruntime-gpu")], name
