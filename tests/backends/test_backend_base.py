"""Shared pre/post-processing and the Backend template (no model file needed)."""

from __future__ import annotations

import numpy as np
import pytest

from norface_rt.backends import Backend, ModelOutput, denormalize, preprocess, validate_crops
from norface_rt.config import ModelConfig


def test_preprocess_known_values() -> None:
    cfg = ModelConfig()
    crops = np.zeros((1, 112, 112, 3), np.uint8)
    crops[0, 0, 0] = (0, 255, 51)
    x = preprocess(crops, cfg)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0, :, 0, 0] == pytest.approx([-1.0, 1.0, -0.6])
    imagenet = ModelConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    y = preprocess(crops, imagenet)
    assert y[0, 1, 0, 0] == pytest.approx((1.0 - 0.456) / 0.224)


def test_denormalize_inverts_preprocess_exactly() -> None:
    cfg = ModelConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    crops = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    assert np.array_equal(denormalize(preprocess(crops, cfg), cfg), crops)
    # out-of-range decoder outputs are clipped, not wrapped
    img = denormalize(np.full((1, 3, 2, 2), 5.0, np.float32), ModelConfig())
    assert img.dtype == np.uint8 and img.shape == (1, 2, 2, 3) and np.all(img == 255)


@pytest.mark.parametrize(("bad", "got"), [
    (np.zeros((2, 64, 64, 3), np.float32), "(2, 64, 64, 3) float32"),
    (np.zeros((2, 112, 112, 3), np.float32), "(2, 112, 112, 3) float32"),
    (np.zeros((112, 112, 3), np.uint8), "(112, 112, 3) uint8"),
    (np.zeros((1, 3, 112, 112), np.uint8), "(1, 3, 112, 112) uint8"),
    ([[1, 2]], "list"),
])
def test_validate_crops_messages(bad: object, got: str) -> None:
    with pytest.raises(ValueError) as e:
        validate_crops(bad, ModelConfig())  # type: ignore[arg-type]
    assert str(e.value) == f"crops: expected (N, 112, 112, 3) uint8, got {got}"


class _Counting(Backend):
    """A real (trivial) backend: constant outputs, counts how often the model would run."""

    name = "counting"

    def __init__(self) -> None:
        self.config = ModelConfig()
        self.calls = 0

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.calls += 1
        n = x.shape[0]
        return x, np.full((n, 18), 0.5), np.ones((n, 18)), np.full((n, 8), 0.125)


def test_empty_batch_skips_the_model() -> None:
    be = _Counting()
    out = be.infer(np.zeros((0, 112, 112, 3), np.uint8), want_normalized=True)
    assert be.calls == 0 and len(out) == 0
    assert out.normalized is not None and out.normalized.shape == (0, 112, 112, 3)
    assert out.au_prob.shape == (0, 18) and out.au_intensity.shape == (0, 18)
    assert out.emotion_prob.shape == (0, 8) and out.emotion_prob.dtype == np.float32
    assert out.timings == {}  # nothing ran
    assert be.infer(np.zeros((0, 112, 112, 3), np.uint8)).normalized is None


def test_infer_template_converts_outputs() -> None:
    be = _Counting()
    crops = np.random.default_rng(2).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    out = be.infer(crops, want_normalized=True)
    assert isinstance(out, ModelOutput) and be.calls == 1
    # a backend without its own stage timing reports the whole graph call as "infer"
    assert list(out.timings) == ["infer"] and 0.0 < out.timings["infer"] < 1.0
    assert out.au_prob.dtype == np.float32 and out.au_prob.shape == (2, 18)
    assert np.array_equal(out.normalized, crops)  # identity "network" round-trips the pixels
    assert be.infer(crops).normalized is None
    with be:
        pass
    assert "counting" in repr(be)
