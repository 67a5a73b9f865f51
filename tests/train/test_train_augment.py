"""Batch augmentation: identity when off, bounded and reproducible when on, labels kept honest."""

from __future__ import annotations

import pytest
import torch

from train.augment import AugmentConfig, augment_batch

MEAN = STD = (0.5, 0.5, 0.5)


def _batch(b: int = 4, s: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g) * 2 - 1  # normalised [-1, 1]


def test_disabled_is_identity() -> None:
    x = _batch()
    for spec in (None, False, {"enabled": False}):
        assert augment_batch(x, AugmentConfig.from_dict(spec), MEAN, STD, torch.Generator()) is x


def test_zero_ranges_are_identity_up_to_resampling() -> None:
    x = _batch()
    cfg = AugmentConfig(shift=0, scale=0, rotate_deg=0, brightness=0, contrast=0, saturation=0)
    y = augment_batch(x, cfg, MEAN, STD, torch.Generator())
    torch.testing.assert_close(y, x)


def test_seeded_and_in_range() -> None:
    x = _batch()
    cfg = AugmentConfig.from_dict({"flip_prob": 0.5})
    a = augment_batch(x, cfg, MEAN, STD, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, MEAN, STD, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, MEAN, STD, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and float(a.min()) >= -1.0 and float(a.max()) <= 1.0
    assert not torch.allclose(a, x)


def test_flip_mirrors_the_image() -> None:
    # a left-right ramp: a certain flip (no other jitter) must reverse it exactly
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    cfg = AugmentConfig(shift=0, scale=0, rotate_deg=0, brightness=0, contrast=0, saturation=0,
                        flip_prob=1.0)
    y = augment_batch(ramp, cfg, MEAN, STD, torch.Generator())
    torch.testing.assert_close(y, ramp.flip(-1), atol=1e-5, rtol=0)


def test_shift_moves_content_by_about_the_range() -> None:
    # a bright square; with only shifts of up to 10% its centre moves by at most ~3.2 px of 32
    x = -torch.ones(64, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    cfg = AugmentConfig(shift=0.1, scale=0, rotate_deg=0, brightness=0, contrast=0, saturation=0)
    y = augment_batch(x, cfg, MEAN, STD, torch.Generator().manual_seed(0))
    w = (y[:, 0] + 1).clamp(min=0)
    xs = torch.arange(32.0)
    cx = (w.sum(1) * xs).sum(1) / w.sum((1, 2))
    dev = (cx - 15.5).abs()
    assert float(dev.max()) <= 3.3 and float(dev.max()) > 1.5, dev


def test_grayscale_makes_some_images_grey_and_leaves_the_others() -> None:
    x = _batch(b=64)
    cfg = AugmentConfig(shift=0, scale=0, rotate_deg=0, brightness=0, contrast=0, saturation=0,
                        grayscale_prob=0.5)
    y = augment_batch(x, cfg, MEAN, STD, torch.Generator().manual_seed(1))
    grey = (y.amax(dim=1) - y.amin(dim=1)).amax(dim=(1, 2)) < 1e-6
    assert 16 < int(grey.sum()) < 48
    torch.testing.assert_close(y[~grey], x[~grey])
    luma = (x[grey] * torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1)).sum(1)
    # the grey value is the luma of the colour pixel (in [0, 1] pixel units, normalised back)
    torch.testing.assert_close(y[grey][:, 0], (luma + 1) / 2 * 2 - 1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [{"shift": -0.1}, {"flip_prob": 2}, {"nope": 1}, {"scale": "x"},
                                 {"grayscale_prob": 1.5}])
def test_bad_config_names_the_field(bad: dict) -> None:  # type: ignore[type-arg]
    key = next(iter(bad))
    with pytest.raises((ValueError, TypeError), match=key):
        AugmentConfig.from_dict(bad)


def test_normalizer_refuses_flip() -> None:
    from train.normalizer import NormalizerTrainer
    with pytest.raises(ValueError, match="flip_prob"):
        NormalizerTrainer({"model": {"size": "tiny", "img_size": 32}, "data": {"kind": "folder", "path": "."},
                           "normalizer": {"augment": {"flip_prob": 0.5}}, "run": {"out_dir": "unused"}})
