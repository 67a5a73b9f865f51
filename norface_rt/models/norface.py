"""The two Norface networks and the fused inference model.

Normalization network F_nor: a shared encoder E_s maps the original face I_o and the target face
I_t to tokens, the EMM merges the original's expression into the target's tokens, and a conv decoder
renders the normalized face I_n (the target identity wearing I_o's expression).

Classification network F_cls: encoder E_f runs on I_n and I_o (one batched pass of 2B), each
pooled feature goes through its own input MoE block (normalized / original branch), the two are
concatenated and go through an output MoE block, then linear heads give AU occurrence logits,
AU intensities and emotion logits.

:class:`NorfaceModel` is what ships: the target is fixed, so its tokens are computed once by
:meth:`NorfaceModel.set_target` and stored in a buffer (saved with the weights and baked into the
ONNX graph as a constant; with ``cfg.normalizer_residual`` the target image is stored the same way,
because the decoder then renders I_n - I_t); per face the normalization costs one encoder pass + EMM + decoder.

The runtime can also run the two halves as separate graphs (so each stage can be timed and placed
on its own): :class:`NormalizerGraph` (face -> normalized) and :class:`ClassifierGraph`
((normalized, face) -> probabilities) are thin views over one NorfaceModel whose composition is
exactly ``NorfaceModel.forward``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from norface_rt.config import ModelConfig
from norface_rt.models.decoder import ConvDecoder
from norface_rt.models.emm import ExpressionMergingModule
from norface_rt.models.moe import MoEOutput, NoisyTopKMoE
from norface_rt.models.vit import ViTEncoder


def _check_images(x: torch.Tensor, cfg: ModelConfig, name: str) -> None:
    want = (cfg.in_chans, cfg.img_size, cfg.img_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(f"{name}: expected (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")


class NormalizationNet(nn.Module):
    """E_s + EMM + ConvDecoder: (I_o, target tokens) -> I_n in normalised pixel space."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg)
        self.emm = ExpressionMergingModule(cfg.embed_dim, cfg.emm_heads, cfg.emm_blocks, cfg.mlp_ratio,
                                           num_tokens=cfg.num_patches,
                                           position_prior=cfg.emm_position_prior)
        self.decoder = ConvDecoder(cfg)

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """I_t (B, C, S, S) -> target tokens (B, N, D); cache these, they never change at runtime."""
        _check_images(target, self.cfg, "target")
        return self.encoder(target)

    def forward(self, original: torch.Tensor, target_tokens: torch.Tensor,
                target_image: torch.Tensor | None = None) -> torch.Tensor:
        """I_o (B, C, S, S), target tokens (1 or B, N, D) [, I_t (1 or B, C, S, S)] -> I_n.

        ``target_image`` is required (and only used) when ``cfg.normalizer_residual`` is set."""
        _check_images(original, self.cfg, "original")
        out = self.decoder(self.emm(target_tokens, self.encoder(original)))
        if not self.cfg.normalizer_residual:
            return out
        if target_image is None:
            raise ValueError("target_image: required when normalizer_residual is true, got None")
        _check_images(target_image, self.cfg, "target_image")
        return out + target_image


@dataclass
class ClassifierOutput:
    au_logits: torch.Tensor  # (B, A), sigmoid -> occurrence probability
    au_intensity: torch.Tensor  # (B, A) in [0, cfg.au_intensity_max]
    emotion_logits: torch.Tensor  # (B, E), softmax -> emotion distribution (cfg.emotion_readout)
    moe_normalized: MoEOutput
    moe_original: MoEOutput
    moe_output: MoEOutput
    moe_geometry: MoEOutput | None = None
    # Both emotion read-outs when the model has a geometry input (training trains both).
    emotion_logits_fused: torch.Tensor | None = None
    emotion_logits_geometry: torch.Tensor | None = None


class GeometryExpert(nn.Module):
    """Geometry vector -> feature of the encoder's width: standardised by the population neutral
    face (config), then a two-layer MLP. The third input of the classifier (see config)."""

    reference: torch.Tensor
    spread: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        g, d = cfg.geometry_dim, cfg.embed_dim
        if g < 1:
            raise ValueError(f"cfg.geometry_dim: expected >= 1 for a geometry expert, got {g}")
        self.register_buffer("reference", torch.tensor(cfg.geometry_reference, dtype=torch.float32))
        self.register_buffer("spread", torch.tensor(cfg.geometry_spread, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(g, cfg.geometry_hidden), nn.GELU(),
                                 nn.Linear(cfg.geometry_hidden, d))

    def forward(self, geometry: torch.Tensor) -> torch.Tensor:
        return self.net((geometry - self.reference) / self.spread)


def _check_geometry(geometry: torch.Tensor | None, cfg: ModelConfig, batch: int) -> None:
    g = cfg.geometry_dim
    if g == 0:
        if geometry is not None:
            raise ValueError("geometry: this model has no geometry input (config geometry_inputs=()), "
                             "got a tensor")
        return
    if geometry is None:
        raise ValueError(f"geometry: this model consumes {list(cfg.geometry_inputs)} "
                         f"({g} values per face), got None")
    if geometry.dim() != 2 or tuple(geometry.shape) != (batch, g):
        raise ValueError(f"geometry: expected ({batch}, {g}), got {tuple(geometry.shape)}")


class ClassificationNet(nn.Module):
    """E_f on (I_n, I_o) -> identity-specific input MoEs -> output MoE -> task heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        moe = dict(hidden=cfg.moe_hidden, m=cfg.moe_experts, k=cfg.moe_top_k, noisy=cfg.moe_noise)
        self.encoder = ViTEncoder(cfg)
        self.moe_normalized = NoisyTopKMoE(d, d, **moe)
        self.moe_original = NoisyTopKMoE(d, d, **moe)
        branches = 2
        if cfg.geometry_dim:
            # The paper's input MoE extended to a third, identity-free input: MediaPipe's
            # geometry reading of the face, with its own expert block.
            self.geometry_expert = GeometryExpert(cfg)
            self.moe_geometry = NoisyTopKMoE(d, d, **moe)
            self.geometry_norm = nn.LayerNorm(d, eps=1e-6)
            self.emotion_head_geometry = nn.Linear(d, len(cfg.emotion_names))
            branches = 3
        self.moe_output = NoisyTopKMoE(branches * d, d, **moe)
        self.head_norm = nn.LayerNorm(d, eps=1e-6)
        self.au_head = nn.Linear(d, len(cfg.au_names))
        self.intensity_head = nn.Linear(d, len(cfg.au_names))
        self.emotion_head = nn.Linear(d, len(cfg.emotion_names))

    def forward(self, normalized: torch.Tensor, original: torch.Tensor,
                geometry: torch.Tensor | None = None) -> ClassifierOutput:
        _check_images(normalized, self.cfg, "normalized")
        _check_images(original, self.cfg, "original")
        if normalized.shape[0] != original.shape[0]:
            raise ValueError(f"normalized/original: batch sizes differ ({normalized.shape[0]} vs "
                             f"{original.shape[0]})")
        _check_geometry(geometry, self.cfg, int(original.shape[0]))
        # One encoder pass over 2B images: better GEMM shapes than two passes of B.
        feats = self.encoder(torch.cat([normalized, original], dim=0)).mean(dim=1)
        f_n, f_o = feats.chunk(2, dim=0)
        m_n = self.moe_normalized(f_n)
        m_o = self.moe_original(f_o)
        parts = [m_n.out, m_o.out]
        m_g = None
        emo_geometry = None
        if geometry is not None:
            m_g = self.moe_geometry(self.geometry_expert(geometry))
            parts.append(m_g.out)
            emo_geometry = self.emotion_head_geometry(self.geometry_norm(m_g.out))
        m_out = self.moe_output(torch.cat(parts, dim=1))
        h = self.head_norm(m_out.out)
        emo_fused = self.emotion_head(h)
        return ClassifierOutput(
            au_logits=self.au_head(h),
            au_intensity=torch.sigmoid(self.intensity_head(h)) * self.cfg.au_intensity_max,
            emotion_logits=emo_geometry if (self.cfg.emotion_readout == "geometry"
                                            and emo_geometry is not None) else emo_fused,
            moe_normalized=m_n,
            moe_original=m_o,
            moe_output=m_out,
            moe_geometry=m_g,
            emotion_logits_fused=emo_fused,
            emotion_logits_geometry=emo_geometry,
        )


class NorfaceModel(nn.Module):
    """Normalizer + classifier + cached target tokens; ``forward`` is the exported inference graph."""

    target_tokens: torch.Tensor
    target_ready: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalizer = NormalizationNet(cfg)
        self.classifier = ClassificationNet(cfg)
        self.register_buffer("target_tokens", torch.zeros(1, cfg.num_patches, cfg.embed_dim))
        self.register_buffer("target_ready", torch.zeros((), dtype=torch.uint8))
        # Logit adjustment towards cfg.emotion_prior (Menon et al., 2021): training is class
        # balanced, so the log prior is added at inference only. Absent without a prior, so
        # older weight files still load strictly.
        if cfg.emotion_prior:
            prior = torch.tensor(cfg.emotion_prior, dtype=torch.float32)
            self.register_buffer("emotion_log_prior", torch.log(prior / prior.sum()),
                                 persistent=False)
        else:
            self.emotion_log_prior: torch.Tensor | None = None
        if cfg.normalizer_residual:  # only then, so older weight files still load strictly
            self.register_buffer("target_image",
                                 torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size))
        else:
            self.target_image: torch.Tensor | None = None

    @property
    def has_target(self) -> bool:
        return bool(self.target_ready.item())

    @torch.no_grad()
    def set_target(self, image: torch.Tensor) -> torch.Tensor:
        """Encode the target face once (normalised (C, S, S) or (1, C, S, S)) and cache its tokens.

        Call again after E_s changes (e.g. after loading trained weights with a new target).
        """
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"image: expected (C, S, S) or (1, C, S, S), got {tuple(image.shape)}")
        was_training = self.normalizer.training
        self.normalizer.eval()
        try:
            tokens = self.normalizer.encode_target(image.to(self.target_tokens.device).float())
        finally:
            self.normalizer.train(was_training)
        self.target_tokens.copy_(tokens)
        if self.target_image is not None:
            self.target_image.copy_(image)
        self.target_ready.fill_(1)
        return tokens

    def forward_full(self, face: torch.Tensor, geometry: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, ClassifierOutput]:
        """Normalized face plus every classifier output (MoE routing included), for training/eval."""
        normalized = self.normalize(face)
        return normalized, self.classifier(normalized, face, geometry)

    def normalize(self, face: torch.Tensor) -> torch.Tensor:
        """face (B, C, S, S) normalised -> normalized face (B, C, S, S), onto the cached target."""
        return self.normalizer(face, self.target_tokens, self.target_image)

    def classify(self, normalized: torch.Tensor, face: torch.Tensor,
                 geometry: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalized, face[, geometry]) -> (au_prob (B, A), au_intensity (B, A) in [0, max],
        emotion_prob (B, E)): the inference heads, probabilities rather than logits, with the
        config's emotion prior applied."""
        out = self.classifier(normalized, face, geometry)
        logits = out.emotion_logits
        if self.emotion_log_prior is not None:
            logits = logits + self.emotion_log_prior
        return (
            torch.sigmoid(out.au_logits),
            out.au_intensity,
            torch.softmax(logits, dim=-1),
        )

    def forward(
        self, face: torch.Tensor, geometry: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """face (B, C, S, S) normalised[, geometry (B, G)] -> (normalized (B, C, S, S), au_prob
        (B, A), au_intensity (B, A) in [0, max], emotion_prob (B, E))."""
        normalized = self.normalize(face)
        return (normalized, *self.classify(normalized, face, geometry))


class NormalizerGraph(nn.Module):
    """The normalization half of a NorfaceModel as its own graph (``normalizer.onnx``).

    Shares the model's modules (no copy); the cached target tokens are part of it, so the exported
    graph bakes them in as a constant exactly like the combined graph does.
    """

    def __init__(self, model: NorfaceModel) -> None:
        super().__init__()
        if not isinstance(model, NorfaceModel):
            raise TypeError(f"model: expected NorfaceModel, got {type(model).__name__}")
        self.model = model

    def forward(self, face: torch.Tensor) -> torch.Tensor:
        return self.model.normalize(face)


class ClassifierGraph(nn.Module):
    """The classification half of a NorfaceModel as its own graph (``classifier.onnx``)."""

    def __init__(self, model: NorfaceModel) -> None:
        super().__init__()
        if not isinstance(model, NorfaceModel):
            raise TypeError(f"model: expected NorfaceModel, got {type(model).__name__}")
        self.model = model

    def forward(self, normalized: torch.Tensor, face: torch.Tensor,
                geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.classify(normalized, face, geometry)
