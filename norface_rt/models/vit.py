"""ViT encoder and MAE pre-training wrapper (He et al., 2022) shared by training and runtime.

The encoder is deliberately plain (pre-norm blocks, fixed 2-D sin-cos positions, no cls token by
default) so that the same weights serve MAE pre-training, the Norface normalization encoder E_s and
the classification encoder E_f, and so that the graph exports to ONNX opset 17 without custom ops:
attention goes through ``torch.nn.functional.scaled_dot_product_attention``, which the exporters
decompose into MatMul/Softmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from norface_rt.config import ModelConfig


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions, shape (grid_size**2, embed_dim), row-major like PatchEmbed.

    Fixed rather than learned because MAE showed it works as well and it keeps the state dict
    independent of the grid, so nothing position-related can drift between training and export.
    Half the channels encode the row, half the column; each half is [sin, cos] of
    ``pos / 10000**(2i/d)`` as in MAE's reference implementation.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2-D sin-cos positions, got {embed_dim}")
    coords = np.arange(grid_size, dtype=np.float64)
    gw, gh = np.meshgrid(coords, coords)  # gw varies along columns, gh along rows

    def one_axis(pos: np.ndarray, dim: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_axis(gh, embed_dim // 2), one_axis(gw, embed_dim // 2)], axis=1)
    return torch.from_numpy(emb.astype(np.float32))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, C, S, S) -> (B, (S/p)**2, D)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention through SDPA (fused kernel in PyTorch, plain ops in ONNX)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads ({num_heads}), got {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5  # explicit: keeps Shape/Sqrt ops out of the ONNX graph
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token count and width as Python ints, batch as -1: in an exported graph N and D are
        # constants, so the reshapes need no Shape/Gather/Concat chains (measurable at batch 1).
        n, d = int(x.shape[1]), int(x.shape[2])
        qkv = self.qkv(x).reshape(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(-1, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_vit_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE per-sample random masking by argsort of uniform noise.

    Returns (kept tokens (B, K, D), mask (B, N) with 1 = removed, ids_restore (B, N)).
    ``noise`` (B, N) may be passed to make the mask reproducible (tests, evaluation).
    """
    b, n, d = x.shape
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = max(1, int(round(n * (1.0 - mask_ratio))))
    if noise is None:
        noise = torch.rand(b, n, device=x.device)
    elif noise.shape != (b, n):
        raise ValueError(f"noise: expected shape {(b, n)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


class ViTEncoder(nn.Module):
    """Patch embedding + fixed positions + ``cfg.depth`` blocks + final LayerNorm.

    ``cls_token`` is off by default: Norface's decoder needs exactly one token per patch, and the
    classifier mean-pools. With it on, token 0 of every output is the cls token.
    """

    def __init__(self, cfg: ModelConfig, *, cls_token: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        self.use_cls = cls_token
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cls_token else None
        # Not persistent: recomputed from the config, so the checkpoint cannot disagree with it.
        self.register_buffer(
            "pos_embed", sincos_pos_embed_2d(cfg.embed_dim, self.grid_size).unsqueeze(0),
            persistent=False,
        )
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.apply(init_vit_weights)
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + (1 if self.use_cls else 0)

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) normalised image -> tokens (B, N[+1], D)."""
        return self._run_blocks(self.patch_embed(x) + self.pos_embed)

    def forward_masked(
        self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode only a random subset of patches: (visible tokens, mask (B, N), ids_restore)."""
        tokens = self.patch_embed(x) + self.pos_embed
        kept, mask, ids_restore = random_masking(tokens, mask_ratio, noise)
        return self._run_blocks(kept), mask, ids_restore


class MAE(nn.Module):
    """Masked autoencoder around :class:`ViTEncoder` for pre-training E_s / E_f on faces.

    The light decoder (``cfg.mae_decoder_dim`` wide, ``cfg.mae_decoder_depth`` deep) predicts the
    pixels of every patch; the loss counts masked patches only, as in MAE. With ``norm_pix_loss``
    the target of each patch is normalised by its own mean/variance (MAE's better variant).
    """

    def __init__(self, cfg: ModelConfig, *, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm_pix_loss = norm_pix_loss
        self.encoder = ViTEncoder(cfg)
        dd = cfg.mae_decoder_dim
        heads = dd // 32 if dd % 32 == 0 else 1  # 32-wide heads, as in MAE's light decoder
        p = cfg.patch_size
        self.decoder_embed = nn.Linear(cfg.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer(
            "decoder_pos_embed",
            sincos_pos_embed_2d(dd, self.encoder.grid_size).unsqueeze(0),
            persistent=False,
        )
        self.decoder_blocks = nn.ModuleList(
            Block(dd, heads, cfg.mlp_ratio) for _ in range(cfg.mae_decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, p * p * cfg.in_chans)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_vit_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, N, p*p*C), patches row-major, pixels (row, col, channel)."""
        p, c = self.cfg.patch_size, self.cfg.in_chans
        b, _, s, _ = imgs.shape
        h = s // p
        x = imgs.reshape(b, c, h, p, h, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, h * h, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p, c = self.cfg.patch_size, self.cfg.in_chans
        b, n, _ = x.shape
        h = int(round(n**0.5))
        x = x.reshape(b, h, h, p, p, c)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, h * p, h * p)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        masks = self.mask_token.expand(b, n - x.shape[1], -1)
        x = torch.cat([x, masks], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over masked patches only (mask == 1)."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss, pred (B, N, p*p*C), mask (B, N) with 1 = masked)."""
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.encoder.forward_masked(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask
