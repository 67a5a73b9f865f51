"""Without TensorRT everything still imports, and every entry point says how to install it.

Where TensorRT is really installed, the subprocess tests shadow it with a package whose import
fails (what a broken or stub install looks like), so they test the same path everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine_helpers import tensorrt_importable

REPO = Path(__file__).resolve().parents[2]


def run_py(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = [str(REPO)]
    if tensorrt_importable():
        shadow = tmp_path / "shadow" / "tensorrt"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('tensorrt hidden by the test')\n")
        paths.insert(0, str(shadow.parent))
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=str(tmp_path))


def test_build_engines_cli_exits_2_with_the_install_hint(tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    res = run_py(["-m", "norface_rt", "build-engines", "--model-dir", str(tiny_model_dir),
                  "--out", str(tmp_path / "cache")], tmp_path)
    assert res.returncode == 2, res.stderr
    assert "TensorRT" in res.stderr and "pip install" in res.stderr and "docs/gpu.md" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cache").exists()


def test_packages_import_without_tensorrt_torch_or_cuda(tmp_path: Path) -> None:
    code = ("import sys, norface_rt.engines, norface_rt.engines.precision, "
            "norface_rt.engines.build, norface_rt.backends.tensorrt, norface_rt.backends.trt_cache\n"
            "from norface_rt.engines.build import build_engines\n"
            "assert norface_rt.engines.build_engines is build_engines\n"
            "heavy = [m for m in ('tensorrt', 'torch', 'onnxruntime') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n")
    res = run_py(["-c", code], tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.skipif(tensorrt_importable(), reason="TensorRT is installed here")
def test_backend_and_builder_raise_import_error_with_the_hint(tiny_model_dir: Path) -> None:
    from norface_rt.backends import BackendUnavailable, load_backend
    from norface_rt.backends.tensorrt import TensorRTUnavailable, TrtBackend
    from norface_rt.engines.build import build_engines

    with pytest.raises(ImportError, match=r"pip install 'norface-rt\[tensorrt\]'"):
        TrtBackend(tiny_model_dir)
    with pytest.raises(TensorRTUnavailable, match="docs/gpu.md"):
        build_engines(tiny_model_dir)
    with pytest.raises(BackendUnavailable, match="TensorRT"):
        load_backend(tiny_model_dir, "tensorrt")


def test_bad_build_options_fail_before_anything_is_imported(tiny_model_dir: Path) -> None:
    from norface_rt.engines.build import build_engines

    with pytest.raises(ValueError, match="opt_batch must be <= max_batch"):
        build_engines(tiny_model_dir, max_batch=4, opt_batch=8)
    with pytest.raises(ValueError, match="fp32_layers"):
        build_engines(tiny_model_dir, fp32_layers="sometimes")
    with pytest.raises(ValueError, match="'fused' engines are no longer built"):
        build_engines(tiny_model_dir, graphs="fused")


@pytest.mark.parametrize("spec, index", [(0, 0), (3, 3), ("cuda", 0), ("cuda:1", 1), (" CUDA:2 ", 2)])
def test_device_spellings(spec: object, index: int) -> None:
    from norface_rt.backends.tensorrt import device_index

    assert device_index(spec) == index  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", ["cpu", "cuda:", "cuda:x", -1, True, 1.0])
def test_bad_device_is_a_clear_error(spec: object) -> None:
    from norface_rt.backends.tensorrt import device_index

    with pytest.raises(ValueError, match="device must be a CUDA device index"):
        device_index(spec)  # type: ignore[arg-type]
