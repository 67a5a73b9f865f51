"""Convolutional decoder from merged tokens back to a face image (the normalized face I_n)."""

from __future__ import annotations

import math

import torch
from torch import nn

from norface_rt.config import ModelConfig


class ConvDecoder(nn.Module):
    """tokens (B, N, D) -> (B, D, h, w) -> log2(patch) x2 upsamplings -> (B, C, S, S).

    The first log2(patch)-1 doublings are nearest-upsample + 3x3 conv + BatchNorm + GELU with
    ``cfg.decoder_channels`` (the last entry repeats if the list is shorter). The final doubling is a
    3x3 conv to 4*C channels plus PixelShuffle, so no convolution ever runs at full resolution: that
    stage would cost as much as the rest of the decoder (measured budget: ~15 ms per face on 2 CPU
    cores for the whole model). BatchNorm folds into the convs at export, so it is free at runtime.

    Output is LINEAR (no tanh) in the config's normalised pixel space ((x/255 - mean)/std): a tanh
    would hard-code mean = std = 0.5. Consumers clip when converting back to uint8.

    With ``cfg.normalizer_residual`` the output is I_n - I_t and the head starts at zero, so an
    untrained normalizer returns the target exactly: the decoder's capacity goes to the expression
    rather than to re-drawing the fixed target's face from 7x7 tokens.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        p = cfg.patch_size
        n_up = int(round(math.log2(p))) if p > 1 else 0
        if p < 2 or 2**n_up != p:
            raise ValueError(f"patch_size must be a power of two >= 2 for ConvDecoder, got {p}")
        if not cfg.decoder_channels:
            raise ValueError("decoder_channels must have at least one entry, got ()")
        self.grid = cfg.img_size // p
        self.num_patches = self.grid**2
        chans = cfg.decoder_channels
        stages: list[nn.Module] = []
        cin = cfg.embed_dim
        for i in range(n_up - 1):
            cout = chans[min(i, len(chans) - 1)]
            stages += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.GELU(),
            ]
            cin = cout
        self.body = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Conv2d(cin, cfg.in_chans * 4, 3, padding=1), nn.PixelShuffle(2))
        if cfg.normalizer_residual:
            nn.init.zeros_(self.head[0].weight)
            nn.init.zeros_(self.head[0].bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] == self.num_patches + 1:  # drop a cls token
            tokens = tokens[:, 1:]
        elif tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"tokens: expected {self.num_patches} patch tokens, got shape {tuple(tokens.shape)}"
            )
        d = int(tokens.shape[2])
        x = tokens.transpose(1, 2).reshape(-1, d, self.grid, self.grid)
        return self.head(self.body(x))
