"""Small auxiliary networks that supervise F_nor (identity, landmarks, expression, blendshapes,
perceptual features) and its patch discriminator.

They are deliberately small: each learns one well-defined quantity from data with known ground
truth (the synthetic engine provides identity ids, iBUG-68 landmarks and blendshape weights), or is
replaced by user-supplied pretrained weights. All take images in the model's normalised pixel
space (B, 3, S, S), i.e. exactly what the normalizer outputs, so gradients flow from I_n.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

AUX_KINDS = ("identity", "landmarks", "expression", "blendshapes", "perceptual", "discriminator")


@dataclass
class AuxConfig:
    """Architecture of one aux net; stored in its safetensors metadata so it rebuilds itself."""

    kind: str
    img_size: int = 112
    width: int = 32
    stages: int = 4
    dim: int = 128  # embedding size (identity / expression)
    num_outputs: int = 0  # classes (identity training head) or blendshape count
    output_names: list[str] = field(default_factory=list)  # blendshape names
    in_channels: int = 3  # 6 for the conditional discriminator, which sees an image pair

    def __post_init__(self) -> None:
        if self.kind not in AUX_KINDS:
            raise ValueError(f"aux kind must be one of {AUX_KINDS}, got {self.kind!r}")
        if self.img_size % (2 ** self.stages):
            raise ValueError(f"img_size must be a multiple of 2**stages={2 ** self.stages}, "
                             f"got {self.img_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backbone(nn.Module):
    """Conv stages (3x3 stride 2 + 3x3), GroupNorm, SiLU; returns every stage's feature map."""

    def __init__(self, width: int, stages: int, in_channels: int = 3) -> None:
        super().__init__()
        layers = []
        c_in = in_channels
        for i in range(stages):
            c = width * min(2**i, 8)
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, 2, 1), nn.GroupNorm(min(8, c), c), nn.SiLU(),
                nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(min(8, c), c), nn.SiLU()))
            c_in = c
        self.stages = nn.ModuleList(layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        return feats


class AuxNet(nn.Module):
    """One class for all kinds; ``forward`` returns what the loss of that kind consumes.

    identity -> L2-normalised embedding (B, dim) (training head: ``logits``)
    expression -> embedding (B, dim) (training head: blendshape regression)
    landmarks -> (B, 68, 2) in crop pixels; blendshapes -> (B, K) in [0, 1]
    perceptual -> list of feature maps; discriminator -> patch logits (B, 1, h, w)
    """

    def __init__(self, cfg: AuxConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.width, cfg.stages, cfg.in_channels)
        c = self.backbone.out_channels
        k = cfg.kind
        if k in ("identity", "expression"):
            self.embed = nn.Linear(c, cfg.dim)
            if cfg.num_outputs:
                self.head: nn.Module = nn.Linear(cfg.dim, cfg.num_outputs)
        elif k == "landmarks":
            self.head = nn.Linear(c, 68 * 2)
        elif k == "blendshapes":
            if cfg.num_outputs <= 0:
                raise ValueError("blendshapes aux net needs num_outputs > 0")
            self.head = nn.Linear(c, cfg.num_outputs)
        elif k == "perceptual":
            if cfg.num_outputs:
                self.head = nn.Linear(c, cfg.num_outputs)  # identity classes used to train it
        elif k == "discriminator":
            self.head = nn.Conv2d(c, 1, 3, 1, 1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1].mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> Any:
        k = self.cfg.kind
        if k == "perceptual":
            return self.backbone(x)
        if k == "discriminator":
            return self.head(self.backbone(x)[-1])
        h = self.pooled(x)
        if k == "identity":
            return F.normalize(self.embed(h), dim=-1)
        if k == "expression":
            return self.embed(h)
        if k == "landmarks":
            return self.head(h).view(-1, 68, 2) * self.cfg.img_size
        return torch.sigmoid(self.head(h))  # blendshapes

    def training_output(self, x: torch.Tensor) -> torch.Tensor:
        """What the aux net's own training loss compares with ground truth."""
        k = self.cfg.kind
        if k == "identity":
            return self.head(self.embed(self.pooled(x)))
        if k == "expression":
            return torch.sigmoid(self.head(self.embed(self.pooled(x))))
        if k == "perceptual":
            return self.head(self.pooled(x))
        return self(x)
