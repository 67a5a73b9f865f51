"""Batch augmentation for training on synthetic renders that must generalise to real video.

The renders already vary pose, light, blur, noise and codec artefacts; what they lack is the
runtime's own error: at serving time the crop is aligned from MediaPipe landmarks, which jitter
and are biased differently from the renderer's exact geometry. A small random similarity warp
(shift, scale, rotation) around the aligned crop stands in for that error. Colour jitter covers
white balance and exposure of real cameras. A horizontal flip is label-preserving for our outputs
(every AU is bilateral, emotions are symmetric) but not for the normalizer's true I_n (which must
keep the target identity's own left/right), so it is opt-in per stage.

Operates on normalised (B, C, S, S) tensors so it runs on whichever device trains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges are symmetric (+-) unless named as a probability."""

    enabled: bool = True
    shift: float = 0.04  # fraction of the crop side
    scale: float = 0.06  # relative zoom
    rotate_deg: float = 5.0
    brightness: float = 0.15  # additive, in [0, 1] pixel units
    contrast: float = 0.2  # multiplicative around the per-image mean
    saturation: float = 0.2
    flip_prob: float = 0.0  # horizontal flip; only where labels allow it
    # Grey images (infrared webcams, archive and news photos, many surveillance feeds) are real
    # input too; every training source here is colour.
    grayscale_prob: float = 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | bool | None) -> AugmentConfig:
        if d is None or d is False:
            return cls(enabled=False)
        if d is True:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"augment: unknown keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        cfg = cls(**d)
        for f in fields(cls):
            v = getattr(cfg, f.name)
            if f.name != "enabled" and not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"augment.{f.name} must be a number >= 0, got {v!r}")
        for name in ("flip_prob", "grayscale_prob"):
            if getattr(cfg, name) > 1:
                raise ValueError(f"augment.{name} must be in [0, 1], got {getattr(cfg, name)}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _uniform(n: int, r: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) * 2 - 1).mul_(r).to(device)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...],
                  g: torch.Generator) -> torch.Tensor:
    """Random geometric + photometric jitter of a normalised batch; identity when disabled.

    Randomness comes from ``g`` (a CPU generator) so a seeded run is reproducible on any device.
    """
    if not cfg.enabled:
        return x
    b, dev = x.shape[0], x.device
    m = torch.tensor(mean, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=dev, dtype=x.dtype).view(1, -1, 1, 1)
    img = x * s + m  # back to [0, 1] pixels
    if cfg.shift or cfg.scale or cfg.rotate_deg or cfg.flip_prob:
        ang = _uniform(b, math.radians(cfg.rotate_deg), g, dev)
        zoom = 1.0 + _uniform(b, cfg.scale, g, dev)
        flip = (torch.rand(b, generator=g) < cfg.flip_prob).to(dev)
        sx = torch.where(flip, -1.0, 1.0).to(x.dtype)
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
        # Output->input sampling grid in [-1, 1] coordinates; shift is 2*fraction in those units.
        theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos
        theta[:, 0, 2] = _uniform(b, 2 * cfg.shift, g, dev)
        theta[:, 1, 2] = _uniform(b, 2 * cfg.shift, g, dev)
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.contrast:
        mu = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mu) * (1.0 + _uniform(b, cfg.contrast, g, dev)).view(-1, 1, 1, 1) + mu
    if cfg.saturation:
        grey = img.mean(dim=1, keepdim=True)
        img = (img - grey) * (1.0 + _uniform(b, cfg.saturation, g, dev)).view(-1, 1, 1, 1) + grey
    if cfg.brightness:
        img = img + _uniform(b, cfg.brightness, g, dev).view(-1, 1, 1, 1)
    if cfg.grayscale_prob and img.shape[1] == 3:
        luma = torch.tensor((0.299, 0.587, 0.114), device=dev, dtype=x.dtype).view(1, 3, 1, 1)
        grey = (img * luma).sum(dim=1, keepdim=True).expand_as(img)
        pick = (torch.rand(b, generator=g) < cfg.grayscale_prob).to(dev).view(-1, 1, 1, 1)
        img = torch.where(pick, grey, img)
    return (img.clamp(0.0, 1.0) - m) / s
