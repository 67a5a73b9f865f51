"""Fixtures for the network-definition tests: a micro config so every module runs in milliseconds."""

from __future__ import annotations

import pytest
import torch

from norface_rt.config import ModelConfig


@pytest.fixture
def micro_cfg() -> ModelConfig:
    """32x32 input, 8x8 patches (16 tokens), width 32: same code paths as "small", ~1000x cheaper."""
    return ModelConfig.for_size(
        "tiny", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, emm_heads=2,
        emm_blocks=1, decoder_channels=(16, 8), moe_hidden=16, mae_decoder_dim=32,
        mae_decoder_depth=1,
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
