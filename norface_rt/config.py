"""Model configuration: every constant that preprocessing, training and serving must agree on.

The config is saved next to the weights (``config.json``) and embedded in every exported ONNX file
(metadata key ``norface_config``), so the runtime never hard-codes input size, normalisation,
alignment template or label names: it reads them from the model it loads (the timm convention).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The union of the BP4D and DISFA AU sets plus AU43 (eyes closed). Order is the output order of the
# AU heads; names are what consumers see.
AU_NAMES: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU43",
)
EMOTION_NAMES: tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
)

# Five semantic alignment points (ArcFace-style 112x112 template, expressed as fractions of the crop
# side so it scales to any input size): right eye centre, left eye centre (subject's), nose tip,
# right mouth corner, left mouth corner. Image-left comes first for a frontal face.
# The ArcFace template is slightly widened and shifted down so brows (AU1/2/4) stay inside the crop
# and the chin (AU17/26) is not cut off.
DEFAULT_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.3419, 0.4116),
    (0.6565, 0.4099),
    (0.5002, 0.5875),
    (0.3710, 0.7675),
    (0.6315, 0.7661),
)

SIZES: dict[str, dict[str, int]] = {
    # embed_dim, depth, heads for the ViT encoder; the decoder/EMM/MoE scale with embed_dim.
    "tiny": {"embed_dim": 128, "depth": 4, "num_heads": 4},
    "small": {"embed_dim": 192, "depth": 6, "num_heads": 6},
    "base": {"embed_dim": 384, "depth": 8, "num_heads": 6},
}

SCHEMA_VERSION = 1

# FACS intensity scale A..E = 1..5. A model may use another scale (ModelConfig.au_intensity_max);
# frame messages then say which (field au_intensity_max) and the protocol checks against it.
DEFAULT_AU_INTENSITY_MAX = 5.0


@dataclass
class ModelConfig:
    """Architecture and preprocessing of one Norface model set.

    ``trained`` is False for randomly initialised networks; the runtime then marks every message
    it produces as untrained so nobody mistakes plumbing tests for affect estimates.
    """

    name: str = "norface-small"
    size: str = "small"
    img_size: int = 112
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    # MAE decoder (pre-training only)
    mae_decoder_dim: int = 128
    mae_decoder_depth: int = 2
    mask_ratio: float = 0.75
    # Expression Merging Module: cross-attention heads and the two transformer blocks after it
    emm_heads: int = 6
    emm_blocks: int = 2
    # Learned additive bias on the EMM attention logits, initialised to this value on the diagonal
    # (target patch i -> original patch i). 0 disables it (the paper's plain cross-attention).
    emm_position_prior: float = 0.0
    # convolutional decoder from tokens to the normalized face
    decoder_channels: tuple[int, ...] = (128, 64, 32)
    # True: the decoder renders I_n - I_t (zero at init) and the target image is added back.
    normalizer_residual: bool = False
    # Mixture of experts (paper: m=4 experts, k=2 active)
    moe_experts: int = 4
    moe_top_k: int = 2
    moe_hidden: int = 256
    moe_noise: bool = True
    # preprocessing: RGB uint8 -> float (x/255 - mean)/std, NCHW
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    template: tuple[tuple[float, float], ...] = DEFAULT_TEMPLATE
    au_names: tuple[str, ...] = AU_NAMES
    emotion_names: tuple[str, ...] = EMOTION_NAMES
    au_intensity_max: float = DEFAULT_AU_INTENSITY_MAX
    # provenance
    trained: bool = False
    model_id: str = "norface-small-untrained"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep tuples so configs compare equal and stay hashable-ish.
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.emm_position_prior = float(self.emm_position_prior)
        self.normalizer_residual = bool(self.normalizer_residual)
        # JSON gives lists of any length; validate() below checks the channel count.
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.template = tuple((float(x), float(y)) for x, y in self.template)
        self.au_names = tuple(self.au_names)
        self.emotion_names = tuple(self.emotion_names)
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent configs early, naming the field and expected vs actual value."""
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size must be a multiple of patch_size ({self.patch_size}), got {self.img_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim must be divisible by num_heads ({self.num_heads}), got {self.embed_dim}"
            )
        if self.embed_dim % self.emm_heads:
            raise ValueError(
                f"embed_dim must be divisible by emm_heads ({self.emm_heads}), got {self.embed_dim}"
            )
        if not 1 <= self.moe_top_k <= self.moe_experts:
            raise ValueError(
                f"moe_top_k must be in [1, moe_experts={self.moe_experts}], got {self.moe_top_k}"
            )
        if not 0.0 <= self.emm_position_prior <= 20.0:
            raise ValueError(f"emm_position_prior must be in [0, 20], got {self.emm_position_prior}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(
                f"mean/std must have in_chans={self.in_chans} entries, got {len(self.mean)}/{len(self.std)}"
            )
        if not self.au_intensity_max > 0:
            raise ValueError(f"au_intensity_max must be > 0, got {self.au_intensity_max}")
        if len(self.template) != 5:
            raise ValueError(f"template must have 5 points, got {len(self.template)}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @classmethod
    def for_size(cls, size: str, **overrides: Any) -> ModelConfig:
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        dims = dict(SIZES[size])
        dims.setdefault("emm_heads", dims["num_heads"])
        kw: dict[str, Any] = {"name": f"norface-{size}", "size": size,
                              "model_id": f"norface-{size}-untrained", **dims}
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["config_version"] = 1
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d.pop("config_version", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model config not found: {p}")
        return cls.from_json(p.read_text())
