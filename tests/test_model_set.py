"""The model-set format, read without torch or onnx: which sets are complete, which graphs run,
and the config from config.json agreeing with every graph's metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from norface_rt import model_set as ms
from norface_rt.config import ModelConfig
from norface_rt.paths import packaged_model_dir


def test_a_model_set_ships_each_graph_once(tiny_model_dir: Path) -> None:
    assert ms.is_model_dir(tiny_model_dir) and ms.is_model_dir(packaged_model_dir())
    for d in (tiny_model_dir, packaged_model_dir()):
        assert [p.name for p in ms.graph_files(d)] == ["normalizer.onnx", "classifier.onnx"]
        assert not (d / ms.LEGACY_COMBINED_FILE).exists()
        cfg = ms.load_config(d)
        assert all(ms.read_graph_config(p) == cfg for p in ms.graph_files(d))


def test_incomplete_sets_are_not_model_sets(tiny_model_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / ms.CLASSIFIER_FILE).unlink()
    assert not ms.is_model_dir(partial) and not ms.is_model_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"lacks \['classifier.onnx'\]"):
        ms.graph_files(partial)
    (partial / ms.CONFIG_FILE).unlink()
    shutil.copy(tiny_model_dir / ms.CLASSIFIER_FILE, partial)
    assert not ms.is_model_dir(partial)  # graphs without config.json: incomplete


def test_metadata_round_trip_and_contradictions() -> None:
    cfg = ModelConfig.for_size("tiny", model_id="m1")
    meta = ms.metadata_for(cfg)
    assert ms.config_from_metadata(meta, "x.onnx") == cfg
    with pytest.raises(ValueError, match="no 'norface_config' key"):
        ms.config_from_metadata({}, "x.onnx")
    with pytest.raises(ValueError, match="norface_model_id='m2' contradicts"):
        ms.config_from_metadata({**meta, ms.META_MODEL_ID: "m2"}, "x.onnx")
    with pytest.raises(ValueError, match="norface_trained='true' contradicts"):
        ms.config_from_metadata({**meta, ms.META_TRAINED: "true"}, "x.onnx")
    other = ModelConfig.for_size("tiny", model_id="m2", au_intensity_max=3.0)
    assert ms.config_diff(cfg, other) == ["au_intensity_max", "model_id"]


def test_target_image(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = ms.read_target_image(tiny_model_dir, 112)
    assert target is not None and target.shape == (112, 112, 3) and target.dtype == np.uint8
    assert ms.read_target_image(tmp_path, 112) is None  # older sets had none
    with pytest.raises(ValueError, match="target_image: expected a 64x64 crop, got 112x112"):
        ms.read_target_image(tiny_model_dir, 64)


def test_reading_a_model_set_needs_neither_torch_nor_onnx(tiny_model_dir: Path) -> None:
    code = ("import sys\n"
            "from norface_rt import model_set as ms\n"
            "from norface_rt.backends import load_backend\n"
            f"d = {str(tiny_model_dir)!r}\n"
            "assert ms.is_model_dir(d)\n"
            "be = load_backend(d)\n"
            "assert be.config == ms.load_config(d) == ms.read_graph_config(ms.graph_files(d)[0])\n"
            "heavy = [m for m in ('torch', 'onnx', 'safetensors') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
