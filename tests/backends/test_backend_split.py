"""The normalizer / classifier graphs: stage timings, parity with PyTorch, and model sets written
before v0.2 that only hold the joined graph norface.onnx."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from norface_rt.backends import ModelOutput, load_backend
from norface_rt.backends.onnx_backend import OrtBackend
from norface_rt.config import ModelConfig
from norface_rt.types import Stage

FIELDS = ("au_prob", "au_intensity", "emotion_prob")


def assert_timings(out: ModelOutput, keys: set[str]) -> None:
    assert set(out.timings) == keys, out.timings
    for k, v in out.timings.items():
        assert isinstance(k, Stage)
        assert isinstance(v, float) and math.isfinite(v) and 0.0 < v < 10.0, (k, v)


def assert_same_outputs(a: ModelOutput, b: ModelOutput, tol: float = 1e-5) -> None:
    for name in FIELDS:
        diff = np.abs(getattr(a, name) - getattr(b, name)).max()
        assert diff <= tol, f"{name}: max abs diff {diff:.2e} > {tol}"
    assert a.normalized is not None and b.normalized is not None
    assert np.abs(a.normalized.astype(int) - b.normalized).max() <= 1  # uint8 rounding


def test_split_backend_times_both_stages_and_old_sets_still_load(
        model_dir: Path, legacy_model_dir: Path, crops: np.ndarray) -> None:
    split = load_backend(model_dir, intra_op_threads=1)
    assert isinstance(split, OrtBackend) and split.split
    assert [p.name for p in split.onnx_paths] == ["normalizer.onnx", "classifier.onnx"]
    assert split.config == ModelConfig.load(model_dir / "config.json")
    assert not (model_dir / "norface.onnx").exists(), "model sets ship each graph once"

    a = split.infer(crops, want_normalized=True)
    assert_timings(a, {"normalize", "classify"})
    # a model set from before v0.2 loads its joined graph and reports one stage
    old = load_backend(legacy_model_dir, intra_op_threads=1)
    assert isinstance(old, OrtBackend) and not old.split
    assert [p.name for p in old.onnx_paths] == ["norface.onnx"]
    assert old.config == split.config
    c = old.infer(crops, want_normalized=True)
    assert_timings(c, {"infer"})
    assert_same_outputs(a, c)
    assert split.infer(crops[:0]).timings == {}
    # so does the joined graph on its own
    assert not OrtBackend(legacy_model_dir / "norface.onnx").split


def test_torch_backend_times_both_stages(model_dir: Path, crops: np.ndarray) -> None:
    tb = load_backend(model_dir, "torch")
    out = tb.infer(crops, want_normalized=True)
    assert_timings(out, {"normalize", "classify"})
    ref = load_backend(model_dir, intra_op_threads=1).infer(crops, want_normalized=True)
    assert_same_outputs(out, ref, tol=1e-4)  # ORT's fused kernels vs PyTorch


def test_missing_graphs_and_lone_halves_are_clear_errors(model_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(model_dir, partial)
    (partial / "classifier.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['classifier.onnx'\]"):
        OrtBackend(partial)
    with pytest.raises(ValueError, match="a single graph must be a combined model"):
        OrtBackend(model_dir / "normalizer.onnx")


def test_half_written_model_set_falls_back_with_a_warning(
        model_dir: Path, legacy_model_dir: Path, tmp_path: Path, crops: np.ndarray,
        caplog: pytest.LogCaptureFixture) -> None:
    old = tmp_path / "old"
    shutil.copytree(legacy_model_dir, old)
    shutil.copy(model_dir / "normalizer.onnx", old / "normalizer.onnx")
    with caplog.at_level(logging.WARNING, logger="norface_rt.model_set"):
        be = OrtBackend(old)
    assert not be.split
    assert "holds only one of normalizer.onnx and classifier.onnx" in caplog.text
    assert_timings(be.infer(crops), {"infer"})


def test_halves_from_different_exports_are_refused(model_dir: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(model_dir, mixed)
    proto = onnx.load(str(mixed / "classifier.onnx"))
    cfg = ModelConfig.load(mixed / "config.json")
    other = ModelConfig.from_dict({**cfg.to_dict(), "model_id": "norface-tiny-other"})
    for prop in proto.metadata_props:
        if prop.key == "norface_config":
            prop.value = other.to_json()
        elif prop.key == "norface_model_id":
            prop.value = other.model_id
    onnx.save(proto, str(mixed / "classifier.onnx"))
    with pytest.raises(ValueError, match=r"classifier.onnx disagrees with the config embedded in "
                                         r".*normalizer.onnx in fields \['model_id'\]"):
        OrtBackend(mixed)


def test_swapped_halves_are_refused(model_dir: Path, tmp_path: Path) -> None:
    swapped = tmp_path / "swapped"
    shutil.copytree(model_dir, swapped)
    shutil.copy(model_dir / "classifier.onnx", swapped / "normalizer.onnx")
    with pytest.raises(ValueError, match=r"normalizer.onnx: expected I/O \['face'\] -> "
                                         r"\['normalized'\]"):
        OrtBackend(swapped)
