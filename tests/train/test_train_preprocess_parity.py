"""Training feeds the network exactly what serving feeds it: the same crop gives the same tensor
through ``train.data.sample.images_to_tensor`` and the runtime's ``norface_rt.preprocess``, and
(within interpolation rounding) through the on-device aligner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from norface_rt.config import ModelConfig
from norface_rt.model_set import load_config
from norface_rt.paths import packaged_model_dir
from norface_rt.preprocess import preprocess
from train.data.sample import images_to_tensor


@pytest.fixture(params=["default", "imagenet", "packaged"])
def cfg(request: pytest.FixtureRequest) -> ModelConfig:
    if request.param == "packaged":
        return load_config(packaged_model_dir())
    if request.param == "imagenet":
        return ModelConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return ModelConfig()


def test_train_and_serve_tensors_are_identical(cfg: ModelConfig, media_dir: Path,
                                               landmarker_path: Path) -> None:
    from norface_rt.faces.align import Aligner
    from norface_rt.faces.landmarker import Landmarker
    from norface_rt.images import read_rgb
    from norface_rt.types import FramePacket

    image = read_rgb(media_dir / "single_face.jpg")
    with Landmarker(landmarker_path, mode="image", max_faces=4) as lm:
        faces = lm.detect(FramePacket("photo", 0, image, None, 0.0))
    assert faces, "the sample photo has a face"
    real, _ = Aligner(cfg).align(image, [f.points5 for f in faces])
    noise = np.random.default_rng(0).integers(0, 256, (3, cfg.img_size, cfg.img_size, 3),
                                              dtype=np.uint8)
    for crops in (real, noise):
        served = preprocess(crops, cfg)
        trained = images_to_tensor(crops, cfg.mean, cfg.std)
        assert trained.dtype == torch.float32 and tuple(trained.shape) == served.shape
        assert np.array_equal(trained.numpy(), served), "train-time and serve-time inputs differ"


def test_on_device_alignment_applies_the_same_normalisation(cfg: ModelConfig) -> None:
    """An identity warp samples every pixel centre exactly, so what remains is the shared
    scale-and-shift: equal to the CPU path up to float rounding of the sampling weights."""
    from norface_rt.backends.gpu_preprocess import TorchAligner

    s = cfg.img_size
    crop = np.random.default_rng(1).integers(0, 256, (s, s, 3), dtype=np.uint8)
    warped = TorchAligner.from_config(cfg).warp(crop, np.eye(2, 3)[None]).numpy()
    np.testing.assert_allclose(warped, preprocess(crop[None], cfg), atol=1e-4)
