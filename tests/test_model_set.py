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


# --------------------------------------------------------------------------- manifest and damage
def _copy(src: Path, dst: Path, *, manifest: bool = True) -> Path:
    shutil.copytree(src, dst)
    if not manifest:
        (dst / ms.MANIFEST_FILE).unlink()
    return dst


def _flip_weights(path: Path) -> None:
    """Alter bytes well inside a graph's weights: still a valid ONNX file, other numbers."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 256] = bytes(b ^ 0x5A for b in data[mid:mid + 256])
    path.write_bytes(bytes(data))


def test_exported_sets_carry_a_manifest_that_verifies(tiny_model_dir: Path) -> None:
    for d in (tiny_model_dir, packaged_model_dir()):
        files = ms.read_manifest(d)
        assert files is not None and set(files) == {
            "config.json", "normalizer.onnx", "classifier.onnx", "weights.safetensors",
            "target.png"}
        assert ms.verify_model_set(d) is None


@pytest.mark.parametrize("fault,expect", [
    ("garbage", r"classifier.onnx: expected \d+ bytes .* truncated or was altered"),
    ("truncated", r"classifier.onnx: expected \d+ bytes .* truncated or was altered"),
    ("tampered", r"classifier.onnx: sha256 [0-9a-f]{64} differs .* corrupt or was altered"),
    ("missing", r"weights.safetensors: listed in manifest.json but missing"),
    ("unlisted", r"norface.onnx: not listed in .*manifest.json"),
    ("bad manifest", r"manifest.json: not valid JSON"),
])
def test_damaged_files_are_refused_by_the_manifest(tiny_model_dir: Path, tmp_path: Path,
                                                   fault: str, expect: str) -> None:
    from norface_rt.backends import load_backend

    d = _copy(tiny_model_dir, tmp_path / "set")
    graph = d / ms.CLASSIFIER_FILE
    if fault == "garbage":
        graph.write_bytes(np.random.default_rng(0).bytes(4096))
    elif fault == "truncated":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    elif fault == "tampered":
        _flip_weights(graph)
    elif fault == "missing":
        (d / ms.WEIGHTS_FILE).unlink()
    elif fault == "unlisted":
        shutil.copy(graph, d / ms.LEGACY_COMBINED_FILE)
    else:
        (d / ms.MANIFEST_FILE).write_text('{"format": "norface-model-set-manifest", ')
    with pytest.raises(ms.ModelSetError, match=expect):
        load_backend(d)


def test_tampered_weights_would_load_silently_without_the_manifest(tiny_model_dir: Path,
                                                                   tmp_path: Path, caplog) -> None:
    """What the manifest is for: weights altered in place still make a valid graph that runs
    under the original model_id (a set written before manifests loads, with a warning)."""
    import logging

    from norface_rt.backends import load_backend

    d = _copy(tiny_model_dir, tmp_path / "old", manifest=False)
    _flip_weights(d / ms.CLASSIFIER_FILE)
    with caplog.at_level(logging.WARNING, logger="norface_rt.model_set"):
        be = load_backend(d)
    assert be.config.model_id == ms.load_config(tiny_model_dir).model_id
    assert "has no manifest.json (written before manifests existed)" in caplog.text
    ms.write_manifest(d)  # what `norface-rt models manifest` does
    assert ms.verify_model_set(d) is None


@pytest.mark.parametrize("fault,expect", [
    ("garbage onnx", r"classifier.onnx: ONNX Runtime cannot load this graph"),
    ("truncated onnx", r"normalizer.onnx: ONNX Runtime cannot load this graph"),
    ("huge img_size", r"config.json: invalid model config: img_size must be an integer in "
                      r"\[8, 1024\], got 32768"),
    ("malformed config", r"config.json: not a valid JSON model config"),
    ("config vs graph", r"config.json disagrees with the config embedded in .*normalizer.onnx "
                        r"in fields \['img_size'\]"),
])
def test_damaged_sets_without_a_manifest_are_refused_naming_the_file(
        tiny_model_dir: Path, tmp_path: Path, fault: str, expect: str) -> None:
    from norface_rt.backends import load_backend

    d = _copy(tiny_model_dir, tmp_path / "old", manifest=False)
    cfg_text = (d / ms.CONFIG_FILE).read_text()
    if fault == "garbage onnx":
        (d / ms.CLASSIFIER_FILE).write_bytes(np.random.default_rng(1).bytes(4096))
    elif fault == "truncated onnx":
        p = d / ms.NORMALIZER_FILE
        p.write_bytes(p.read_bytes()[:5000])
    elif fault == "huge img_size":
        (d / ms.CONFIG_FILE).write_text(cfg_text.replace('"img_size": 112', '"img_size": 32768'))
    elif fault == "malformed config":
        (d / ms.CONFIG_FILE).write_text(cfg_text[: len(cfg_text) // 2])
    else:  # a consistent-looking set whose config says another input size than its graphs
        (d / ms.CONFIG_FILE).write_text(cfg_text.replace('"img_size": 112', '"img_size": 224'))
        ms.write_manifest(d)
    with pytest.raises(ValueError, match=expect):
        load_backend(d)


def test_a_graph_whose_input_disagrees_with_the_config_is_refused(tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from norface_rt.backends import load_backend

    d = _copy(tiny_model_dir, tmp_path / "set")
    proto = onnx.load(str(d / ms.NORMALIZER_FILE))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 96
    onnx.save(proto, str(d / ms.NORMALIZER_FILE))
    ms.write_manifest(d)  # even a set whose manifest was rewritten to match
    with pytest.raises(ms.ModelSetError, match=r"normalizer.onnx: 'face' has shape "
                                               r"\['batch', 3, 96, 112\], but the model config "
                                               r"says \['B', 3, 112, 112\]"):
        load_backend(d)


def test_truncated_weights_are_refused_by_the_torch_backend(tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from norface_rt.backends import load_backend

    d = _copy(tiny_model_dir, tmp_path / "old", manifest=False)
    w = d / ms.WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    with pytest.raises(ms.ModelSetError, match=r"weights.safetensors: not a readable "
                                               r"safetensors weights file"):
        load_backend(d, "torch")
