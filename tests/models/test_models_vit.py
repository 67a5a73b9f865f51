from __future__ import annotations

import pytest
import torch

from norface_rt.config import ModelConfig
from norface_rt.models import MAE, PatchEmbed, ViTEncoder, create_model, sincos_pos_embed_2d
from norface_rt.models.vit import random_masking


def test_sincos_pos_embed_structure() -> None:
    pe = sincos_pos_embed_2d(16, 4)
    assert pe.shape == (16, 16)
    # position (0, 0): every sin channel 0, every cos channel 1 (both the row and the column half)
    assert torch.allclose(pe[0], torch.tensor(([0.0] * 4 + [1.0] * 4) * 2))
    # rows are distinct positions; same row index -> identical row half
    assert torch.cdist(pe, pe).fill_diagonal_(1.0).min() > 1e-3
    assert torch.equal(pe[1, :8], pe[2, :8])  # patches 1 and 2 share grid row 0
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed_2d(18, 4)


def test_patch_embed_and_encoder_shapes(micro_cfg: ModelConfig) -> None:
    x = torch.randn(3, 3, 32, 32)
    assert PatchEmbed(32, 8, 3, 32)(x).shape == (3, 16, 32)
    assert ViTEncoder(micro_cfg)(x).shape == (3, 16, 32)
    enc = ViTEncoder(micro_cfg, cls_token=True)
    assert enc.num_tokens == 17 and enc(x).shape == (3, 17, 32)


def test_forward_masked_keeps_lowest_noise_patches(micro_cfg: ModelConfig) -> None:
    enc = ViTEncoder(micro_cfg)
    noise = torch.rand(2, 16)
    visible, mask, ids_restore = enc.forward_masked(torch.randn(2, 3, 32, 32), 0.75, noise)
    assert visible.shape == (2, 4, 32)
    assert mask.shape == (2, 16) and torch.equal(mask.sum(1), torch.tensor([12.0, 12.0]))
    # kept (mask 0) == the 4 patches with the smallest noise
    kept = torch.zeros(2, 16)
    kept.scatter_(1, noise.argsort(1)[:, :4], 1.0)
    assert torch.equal(1.0 - mask, kept)
    # ids_restore inverts the shuffle
    assert torch.equal(noise.argsort(1).gather(1, ids_restore), torch.arange(16).expand(2, -1))


def test_random_masking_rejects_bad_ratio_and_noise() -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(1, 4, 8), 1.0)
    with pytest.raises(ValueError, match=r"noise: expected shape \(1, 4\)"):
        random_masking(torch.randn(1, 4, 8), 0.5, torch.rand(1, 5))


def test_patchify_roundtrip(micro_cfg: ModelConfig) -> None:
    mae = MAE(micro_cfg)
    x = torch.randn(2, 3, 32, 32)
    p = mae.patchify(x)
    assert p.shape == (2, 16, 8 * 8 * 3)
    assert torch.equal(mae.unpatchify(p), x)
    # patch 1 is the top row, second column
    assert torch.equal(p[0, 1].reshape(8, 8, 3), x[0, :, 0:8, 8:16].permute(1, 2, 0))


def test_mae_forward_shapes(micro_cfg: ModelConfig) -> None:
    mae = create_model("mae", micro_cfg)
    loss, pred, mask = mae(torch.randn(2, 3, 32, 32))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert pred.shape == (2, 16, 192) and mask.shape == (2, 16)
    loss.backward()
    assert mae.encoder.patch_embed.proj.weight.grad is not None


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_counts_masked_patches_only(micro_cfg: ModelConfig, norm_pix: bool) -> None:
    mae = MAE(micro_cfg, norm_pix_loss=norm_pix)
    imgs = torch.randn(2, 3, 32, 32)
    _, pred, mask = mae(imgs, noise=torch.rand(2, 16))
    pred = pred.detach().requires_grad_(True)
    loss = mae.forward_loss(imgs, pred, mask)
    # change every pixel of the visible (unmasked) patches: loss unchanged
    visible_px = mae.unpatchify((1 - mask).unsqueeze(-1).expand(-1, -1, 192)).bool()
    changed = imgs + visible_px * torch.randn_like(imgs) * 3
    assert torch.equal(mae.forward_loss(changed, pred, mask), loss)
    # change a masked patch: loss changes
    changed_masked = imgs + (~visible_px) * torch.randn_like(imgs)
    assert not torch.allclose(mae.forward_loss(changed_masked, pred, mask), loss)
    # gradient w.r.t. predictions is exactly zero on visible patches
    loss.backward()
    assert torch.all(pred.grad[mask == 0] == 0) and pred.grad[mask == 1].abs().sum() > 0
    if not norm_pix:
        target = mae.patchify(imgs)
        manual = ((pred - target) ** 2).mean(-1)[mask == 1].mean()
        assert torch.allclose(loss, manual)
