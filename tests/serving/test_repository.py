"""The Triton repository writer: three platforms from one template, configs parsed with Triton's
own model_config.proto, preprocessing generated from the model's config (bit for bit the one
every backend uses), and a validator that catches what Triton would refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from norface_rt.config import ModelConfig
from norface_rt.model_set import load_config
from norface_rt.paths import packaged_model_dir
from norface_rt.preprocess import preprocess
from norface_rt.serving.repository import (
    PLAN_SCRIPT,
    PLATFORMS,
    RepositoryOptions,
    parse_model_config,
    preprocess_graph,
    validate_repository,
    write_repository,
)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_platform_writes_a_repository_triton_would_load(platform: str, tmp_path: Path) -> None:
    notes = write_repository(tmp_path, packaged_model_dir(),
                             RepositoryOptions(platform=platform, max_batch=16,
                                               preferred_batch=(4, 8, 16, 64), instances=2))
    ens = parse_model_config(tmp_path / "norface" / "config.pbtxt")
    geometry = ["geometry"] if load_config(packaged_model_dir()).geometry_dim else []
    assert ens.platform == "ensemble" and [i.name for i in ens.input] == ["crops", *geometry]
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [
        "norface_preprocess", "norface_normalizer", "norface_classifier"]
    assert load_config(packaged_model_dir()) == ModelConfig.from_json(
        ens.parameters["norface_config"].string_value)
    for model in ("norface_preprocess", "norface_normalizer", "norface_classifier"):
        mc = parse_model_config(tmp_path / model / "config.pbtxt")
        assert mc.max_batch_size == 16
        assert list(mc.dynamic_batching.preferred_batch_size) == [4, 8, 16]  # 64 > max: dropped
        assert mc.dynamic_batching.max_queue_delay_microseconds == 1000
        assert mc.instance_group[0].count == 2
        kind = "KIND_CPU" if platform == "python" else "KIND_GPU"
        assert mc.instance_group[0].kind == type(mc.instance_group[0]).Kind.Value(kind)
        line = {"python": ("backend", "python"), "onnxruntime": ("platform", "onnxruntime_onnx"),
                "tensorrt": ("platform", "tensorrt_plan")}[platform]
        assert getattr(mc, line[0]) == line[1]
        assert (tmp_path / model / "1" / "model.onnx").is_file()
        assert (tmp_path / model / "1" / "model.py").is_file() == (platform == "python")
    if platform == "tensorrt":
        assert len(notes) == 3 and all("not built yet" in n for n in notes)
        script = (tmp_path / PLAN_SCRIPT).read_text()
        assert "--maxShapes=normalized:16x3x112x112,face:16x3x112x112" in script
        assert "--optShapes=crops:16x112x112x3" in script
    else:
        assert notes == []


def test_the_classifier_gets_the_geometry_input_when_the_model_has_one(geometry_model_dir,
                                                                        tmp_path) -> None:
    write_repository(tmp_path, geometry_model_dir, RepositoryOptions(platform="onnxruntime"))
    ens = parse_model_config(tmp_path / "norface" / "config.pbtxt")
    assert [(i.name, list(i.dims)) for i in ens.input] == [("crops", [112, 112, 3]), ("geometry", [5])]
    clf = parse_model_config(tmp_path / "norface_classifier" / "config.pbtxt")
    assert [i.name for i in clf.input] == ["normalized", "face", "geometry"]


def test_the_generated_preprocessing_is_the_runtimes_bit_for_bit(tmp_path) -> None:
    cfg = load_config(packaged_model_dir())
    odd = type(cfg).from_dict({**cfg.to_dict(), "mean": [0.485, 0.456, 0.406],
                               "std": [0.229, 0.224, 0.225]})
    crops = np.random.default_rng(0).integers(0, 256, (7, 112, 112, 3), dtype=np.uint8)
    crops[0] = 0
    crops[1] = 255
    for c in (cfg, odd):
        sess = ort.InferenceSession(preprocess_graph(c), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"crops": crops})
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, preprocess(crops, c))


def test_the_validator_catches_what_triton_would_refuse(tmp_path) -> None:
    write_repository(tmp_path, packaged_model_dir(), RepositoryOptions(platform="onnxruntime"))
    clf = tmp_path / "norface_classifier" / "config.pbtxt"
    good = clf.read_text()
    clf.write_text(good.replace('name: "face"', 'name: "face_image"'))
    with pytest.raises(ValueError) as e:
        validate_repository(tmp_path)
    geometry = ", 'geometry'" if load_config(packaged_model_dir()).geometry_dim else ""
    assert (f"maps inputs ['face'{geometry}, 'normalized'], the model has "
            f"['face_image'{geometry}, 'normalized']") in str(e.value)
    assert "has no tensor 'face_image'" in str(e.value)
    clf.write_text(good.replace("dims: [ 18 ]", "dims: [ 17 ]", 1))
    with pytest.raises(ValueError, match=r"au_prob has dims \[18\] after the batch axis, the config "
                                         r"says \[17\]"):
        validate_repository(tmp_path)
    clf.write_text(good.replace("max_batch_size: 32", "max_batch_size: thirty-two"))
    with pytest.raises(ValueError, match="config.pbtxt: not a valid Triton model config"):
        validate_repository(tmp_path)
    clf.write_text(good)
    (tmp_path / "norface_normalizer" / "1" / "model.onnx").unlink()
    with pytest.raises(ValueError, match=r"norface_normalizer/1: lacks \['model.onnx'\]"):
        validate_repository(tmp_path)


def test_other_models_stay_and_foreign_ones_are_not_replaced(tmp_path) -> None:
    (tmp_path / "other" / "1").mkdir(parents=True)
    (tmp_path / "other" / "config.pbtxt").write_text('name: "other"\n')
    write_repository(tmp_path, packaged_model_dir())
    write_repository(tmp_path, packaged_model_dir())  # its own models: replaced quietly
    assert (tmp_path / "other" / "config.pbtxt").is_file()
    shutil.rmtree(tmp_path / "norface_classifier")
    (tmp_path / "norface_classifier").mkdir()
    (tmp_path / "norface_classifier" / "config.pbtxt").write_text('name: "mine"\n')
    with pytest.raises(ValueError, match="was not written by norface-rt triton-repo"):
        write_repository(tmp_path, packaged_model_dir())
    write_repository(tmp_path, packaged_model_dir(), RepositoryOptions(force=True))


@pytest.mark.parametrize("bad, message", [
    (dict(platform="tflite"), "--platform must be one of"),
    (dict(max_batch=0), r"--max-batch must be in \[1, 4096\]"),
    (dict(preferred_batch=(64,), max_batch=32), "--preferred-batch must be sizes in"),
    (dict(platform="tensorrt", kind="cpu"), "TensorRT plans run on a GPU only"),
    (dict(name="a b"), "--name must be"),
])
def test_options_are_checked(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RepositoryOptions(**bad).validate()


def test_a_damaged_model_set_is_refused_before_anything_is_written(tiny_model_dir,
                                                                   tmp_path) -> None:
    """The graphs served are the set's own: they are checked against its manifest first."""
    from norface_rt.model_set import ModelSetError

    src = tmp_path / "model"
    shutil.copytree(tiny_model_dir, src)
    data = bytearray((src / "classifier.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the size is right, the sha256 is not
    (src / "classifier.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelSetError, match="classifier.onnx"):
        write_repository(tmp_path / "repo", src)
    assert not (tmp_path / "repo").exists()
