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
    code = ("import sys, engines, engines.cache, engines.precision, engines.build, "
            "engines.trt_backend\n"
            "assert engines.cache_key is engines.cache.cache_key\n"
            "heavy = [m for m in ('tensorrt', 'torch', 'onnxruntime') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n")
    res = run_py(["-c", code], tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


@pytest.mark.skipif(tensorrt_importable(), reason="TensorRT is installed here")
def test_backend_and_builder_raise_import_error_with_the_hint(tiny_model_dir: Path) -> None:
    from engines.build import TensorRTUnavailable, build_engines
    from engines.trt_backend import TrtBackend
    from norface_rt.backends import load_backend

    with pytest.raises(ImportError, match="pip install"):
        TrtBackend(tiny_model_dir)
    with pytest.raises(TensorRTUnavailable, match="docs/gpu.md"):
        build_engines(tiny_model_dir)
    with pytest.raises(RuntimeError, match="TensorRT"):
        load_backend(tiny_model_dir, "tensorrt")


def test_bad_build_options_fail_before_anything_is_imported(tiny_model_dir: Path) -> None:
    from engines.build import build_engines

    with pytest.raises(ValueError, match="opt_batch must be <= max_batch"):
        build_engines(tiny_model_dir, max_batch=4, opt_batch=8)
    with pytest.raises(ValueError, match="fp32_layers"):
        build_engines(tiny_model_dir, fp32_layers="sometimes")
