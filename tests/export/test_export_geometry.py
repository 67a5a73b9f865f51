"""A model with the geometry input through export and every CPU backend (parity), and its
errors when the third input is missing or the landmarker cannot feed it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from norface_rt.backends import load_backend
from norface_rt.export import init_untrained
from norface_rt.model_set import GEOMETRY_NAME, load_config
from norface_rt.reference import make_crops, make_geometry, max_abs_errors, reference_outputs

TOL = {"au_prob": 1e-4, "au_intensity": 1e-3, "emotion_prob": 1e-4}


@pytest.fixture(scope="module")
def geo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_untrained(tmp_path_factory.mktemp("geo"), size="tiny", seed=5, geometry=True)


def test_classifier_graph_declares_the_geometry_input(geo_dir: Path) -> None:
    from norface_rt.model_set import read_manifest, verify_model_set

    # a geometry set gets its manifest like any other, and every file matches it
    manifest = read_manifest(geo_dir)
    assert manifest is not None and "classifier.onnx" in manifest
    assert verify_model_set(geo_dir) is None
    cfg = load_config(geo_dir)
    sess = ort.InferenceSession(str(geo_dir / "classifier.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    assert inputs[GEOMETRY_NAME][1] == cfg.geometry_dim == 51


@pytest.mark.parametrize("backend", ["onnxruntime", "torch", "torch-cuda"])
def test_parity_with_the_torch_reference(geo_dir: Path, backend: str) -> None:
    kw = {"device": "cpu", "fp16": False} if backend == "torch-cuda" else {}
    be = load_backend(geo_dir, backend, **kw)
    crops = make_crops(5, be.config.img_size, 1)
    geo = make_geometry(5, be.config, 1)
    ref = reference_outputs(geo_dir, {5: crops}, {5: geo})[5]
    errors = max_abs_errors(be.infer(crops, geometry=geo), ref)
    assert all(errors[k] <= TOL[k] for k in TOL), errors
    # the geometry input matters: other geometry, other emotions
    other = be.infer(crops, geometry=np.zeros_like(geo))
    assert np.abs(other.emotion_prob - ref["emotion_prob"]).max() > 1e-4
    be.close()


def test_missing_or_wrong_geometry_is_refused_clearly(geo_dir: Path) -> None:
    be = load_backend(geo_dir, "onnxruntime")
    crops = make_crops(2, be.config.img_size, 0)
    with pytest.raises(ValueError, match="consumes \\['blendshapes'\\] \\(51 values per face\\)"):
        be.infer(crops)
    with pytest.raises(ValueError, match=r"expected \(2, 51\) float"):
        be.infer(crops, geometry=np.zeros((2, 50), np.float32))
    with pytest.raises(ValueError, match="finite"):
        be.infer(crops, geometry=np.full((2, 51), np.nan, np.float32))
    assert len(be.infer(crops[:0], geometry=np.zeros((0, 51), np.float32))) == 0


def test_image_only_models_refuse_geometry(tiny_model_dir: Path) -> None:
    be = load_backend(tiny_model_dir, "onnxruntime")
    crops = make_crops(1, be.config.img_size, 0)
    with pytest.raises(ValueError, match="has no geometry input"):
        be.infer(crops, geometry=np.zeros((1, 51), np.float32))


def test_a_landmarker_without_blendshapes_is_refused_before_anything_opens(
        geo_dir: Path, landmarker_path: Path, media_dir: Path, tmp_path: Path) -> None:
    from norface_rt.pipeline import PipelineOptions, create_pipeline

    stripped = tmp_path / "no_blendshapes.task"
    with zipfile.ZipFile(landmarker_path) as src, zipfile.ZipFile(stripped, "w") as dst:
        for name in src.namelist():
            if name != "face_blendshapes.tflite":
                dst.writestr(name, src.read(name))
    opts = PipelineOptions(sources=[str(media_dir / "single_face.jpg")], model_dir=geo_dir,
                           landmarker=stripped)
    with pytest.raises(ValueError, match="has no face_blendshapes.tflite"):
        create_pipeline(opts, [])
