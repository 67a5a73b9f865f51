"""Model configuration: every constant that preprocessing, training and serving must agree on.

The config is saved next to the weights (``config.json``) and embedded in every exported ONNX file
(metadata key ``norface_config``), so the runtime never hard-codes input size, normalisation,
alignment template or label names: it reads them from the model it loads (the timm convention).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from norface_rt.files import read_capped

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

# MediaPipe's face blendshape categories in the landmarker's output order (ARKit names plus
# "_neutral"): the columns of blendshape outputs when no face was seen to name them.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
# MediaPipe's face mesh: 478 points (468 + 10 iris points).
LANDMARK_COUNT = 478

# Colours per emotion in every picture of results (`norface-rt plot`, the live view's charts);
# other labels, and the AUs a timeline draws, take SERIES_COLORS in turn.
EMOTION_COLORS: dict[str, str] = {
    "neutral": "#b0b0b0", "happy": "#f2c12e", "sad": "#3b6fb6", "surprise": "#f08a24",
    "fear": "#8e5ab5", "disgust": "#4c9a2a", "anger": "#d1342f", "contempt": "#8c5a3c",
}
# The other series' colours, in turn (spelled out so that the live view's page draws a series in
# the colour `norface-rt plot` gives it): none close to an emotion's, so an AU line never reads
# as the emotion area beside it (with matplotlib's default cycle AU12 took fear's purple).
SERIES_COLORS: tuple[str, ...] = (
    "#00a0a0", "#d4147a", "#1f1f1f", "#1a2a8c", "#9a9a10", "#00c8e8", "#f58fbf", "#00524a",
    "#00ff80", "#a0d040",
)

# FACS names of the action units the project knows (labels for plots and docs).
AU_DESCRIPTIONS: dict[str, str] = {
    "AU01": "inner brow raiser", "AU02": "outer brow raiser", "AU04": "brow lowerer",
    "AU05": "upper lid raiser", "AU06": "cheek raiser", "AU07": "lid tightener",
    "AU09": "nose wrinkler", "AU10": "upper lip raiser", "AU12": "lip corner puller",
    "AU14": "dimpler", "AU15": "lip corner depressor", "AU17": "chin raiser",
    "AU20": "lip stretcher", "AU23": "lip tightener", "AU24": "lip pressor", "AU25": "lips part",
    "AU26": "jaw drop", "AU28": "lip suck", "AU43": "eyes closed", "AU45": "blink",
}

# Sane bounds of the integer architecture fields: a config outside them is damaged or hostile (an
# img_size of 32768 would make the runtime allocate 12 GiB per face), never a real model.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "img_size": (8, 1024), "patch_size": (1, 1024), "in_chans": (1, 4), "embed_dim": (4, 4096),
    "depth": (1, 64), "num_heads": (1, 64), "mae_decoder_dim": (1, 4096),
    "mae_decoder_depth": (0, 64), "emm_heads": (1, 64), "emm_blocks": (0, 64),
    "moe_experts": (1, 64), "moe_top_k": (1, 64), "moe_hidden": (1, 16384),
}
MAX_LABELS = 256  # AU or emotion names in one model


# A model config is a few KB; a larger file is refused before it is read (files.read_capped).
MAX_CONFIG_BYTES = 1 << 20


class ConfigFileError(ValueError):
    """A config file cannot be read as a model config; the message names the file."""

# FACS intensity scale A..E = 1..5. A model may use another scale (ModelConfig.au_intensity_max);
# frame messages then say which (field au_intensity_max) and the protocol checks against it.
DEFAULT_AU_INTENSITY_MAX = 5.0

# Geometry inputs a model may consume (norface_rt.faces.geometry) and emotion read-outs.
GEOMETRY_KINDS: tuple[str, ...] = ("blendshapes",)
EMOTION_READOUTS: tuple[str, ...] = ("fused", "geometry")


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
    # Geometry input (a third classifier input beside the two faces, norface_rt.faces.geometry):
    # () for image-only models; ("blendshapes",) feeds MediaPipe's blendshapes, in the order of
    # blendshape_names, standardised by the population neutral face (geometry_reference,
    # geometry_spread: mean and standard deviation of real neutral faces the model was calibrated
    # on), which per-track baselines also move towards.
    geometry_inputs: tuple[str, ...] = ()
    blendshape_names: tuple[str, ...] = ()
    geometry_reference: tuple[float, ...] = ()
    geometry_spread: tuple[float, ...] = ()
    # How far (RMS of standardised scores) a reading may be from geometry_reference and still count
    # as a resting face for per-track baselines: the 99th percentile of the calibration pool's own
    # distances. None (models exported before it existed): every frame counts.
    geometry_neutral_radius: float | None = None
    geometry_hidden: int = 128
    # Which representation the emotion head reads: "fused" (images + geometry through the output
    # MoE, the paper's design) or "geometry" (the geometry expert alone). Both heads are trained;
    # this picks the one the model outputs.
    emotion_readout: str = "fused"
    # Emotion base rates the outputs assume (one per emotion, any positive scale; () = uniform,
    # the class-balanced training prior). Applied as a logit adjustment at inference.
    emotion_prior: tuple[float, ...] = ()
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
        self.geometry_inputs = tuple(str(g) for g in self.geometry_inputs)
        self.blendshape_names = tuple(str(n) for n in self.blendshape_names)
        self.geometry_reference = tuple(float(v) for v in self.geometry_reference)
        self.geometry_spread = tuple(float(v) for v in self.geometry_spread)
        if self.geometry_neutral_radius is not None:
            self.geometry_neutral_radius = float(self.geometry_neutral_radius)
        self.emotion_prior = tuple(float(v) for v in self.emotion_prior)
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent configs early, naming the field and expected vs actual value."""
        self._validate_bounds()
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
        self._validate_geometry()

    def _validate_bounds(self) -> None:
        for name, (lo, hi) in INT_BOUNDS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if not 0 < self.mlp_ratio <= 16 or not math.isfinite(self.mlp_ratio):
            raise ValueError(f"mlp_ratio must be in (0, 16], got {self.mlp_ratio}")
        if not 1 <= len(self.decoder_channels) <= 8 or not all(
                1 <= c <= 4096 for c in self.decoder_channels):
            raise ValueError(f"decoder_channels must be 1..8 integers in [1, 4096], got "
                             f"{list(self.decoder_channels)}")
        if not all(math.isfinite(v) for v in self.mean):
            raise ValueError(f"mean must be finite numbers, got {list(self.mean)}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"std must be finite numbers > 0, got {list(self.std)}")
        if not all(-1.0 <= c <= 2.0 for pt in self.template for c in pt):
            raise ValueError("template points must be fractions of the crop side in [-1, 2], got "
                             f"{[list(pt) for pt in self.template]}")
        for name in ("au_names", "emotion_names"):
            names = getattr(self, name)
            if (not 1 <= len(names) <= MAX_LABELS or len(set(names)) != len(names)
                    or not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names)):
                raise ValueError(f"{name} must be 1..{MAX_LABELS} distinct non-empty names of at "
                                 f"most 64 characters, got {list(names)[:10]}"
                                 + (" ..." if len(names) > 10 else ""))
        if not math.isfinite(self.au_intensity_max) or self.au_intensity_max > 1000:
            raise ValueError(f"au_intensity_max must be in (0, 1000], got {self.au_intensity_max}")

    def _validate_geometry(self) -> None:
        unknown = [g for g in self.geometry_inputs if g not in GEOMETRY_KINDS]
        if unknown or len(set(self.geometry_inputs)) != len(self.geometry_inputs):
            raise ValueError(f"geometry_inputs must be distinct names from {list(GEOMETRY_KINDS)}, "
                             f"got {list(self.geometry_inputs)}")
        g = self.geometry_dim
        if "blendshapes" in self.geometry_inputs and not self.blendshape_names:
            raise ValueError("blendshape_names: required when geometry_inputs has 'blendshapes', got ()")
        for name in ("geometry_reference", "geometry_spread"):
            v = getattr(self, name)
            if len(v) != g:
                raise ValueError(f"{name} must have geometry_dim={g} values, got {len(v)}")
        if any(not v > 0 for v in self.geometry_spread):
            raise ValueError("geometry_spread values must be > 0")
        r = self.geometry_neutral_radius
        if r is not None and not 0 < r < 100:
            raise ValueError(f"geometry_neutral_radius must be in (0, 100) or null, got {r}")
        if not 1 <= self.geometry_hidden <= 4096:
            raise ValueError(f"geometry_hidden must be in [1, 4096], got {self.geometry_hidden}")
        if self.emotion_readout not in EMOTION_READOUTS:
            raise ValueError(f"emotion_readout must be one of {list(EMOTION_READOUTS)}, "
                             f"got {self.emotion_readout!r}")
        if self.emotion_readout == "geometry" and not g:
            raise ValueError("emotion_readout 'geometry' needs geometry_inputs, got ()")
        if self.emotion_prior and (len(self.emotion_prior) != len(self.emotion_names)
                                   or any(not v > 0 for v in self.emotion_prior)):
            raise ValueError(f"emotion_prior must be () or {len(self.emotion_names)} positive values "
                             f"(one per emotion), got {list(self.emotion_prior)}")

    @property
    def geometry_dim(self) -> int:
        """Length of the geometry input vector (0 for image-only models)."""
        return len(self.blendshape_names) if "blendshapes" in self.geometry_inputs else 0

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
        """Read a config file; any problem is a :class:`ConfigFileError` naming the file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model config not found: {p}")
        try:
            data = json.loads(read_capped(p, MAX_CONFIG_BYTES, "a model config").decode("utf-8"))
        except ValueError as exc:  # too large (said by read_capped), not UTF-8, not JSON
            if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)):
                raise ConfigFileError(f"{p}: not a valid JSON model config ({exc})") from exc
            raise ConfigFileError(str(exc)) from exc
        if not isinstance(data, dict):
            raise ConfigFileError(f"{p}: expected a JSON object (a model config), got "
                                  f"{type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ConfigFileError(f"{p}: invalid model config: {exc}") from exc
