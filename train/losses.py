"""Training objectives of Norface: the normalization network F_nor and the classifier F_cla.

Every term is a separate function so it can be unit-tested on hand-made tensors and logged on its
own; :func:`normalizer_objective` and :func:`classification_objective` combine them with the
paper's weights (configurable) and return each term alongside the total. Labels follow the common
sample format: AU targets are NaN where unknown and emotion targets -1, so every supervised term
masks those entries and a batch with no labelled entry contributes an exact zero (never NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# iBUG-68 facial contour (jaw line) indices: the points that carry face shape, i.e. identity.
CONTOUR_INDICES: tuple[int, ...] = tuple(range(17))
# ARKit / MediaPipe blendshape names whose channels describe the eyebrows.
EYEBROW_BLENDSHAPES: tuple[str, ...] = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is true; exactly 0 (still differentiable) when none is."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    return (values * mask).sum() / count.clamp_min(1.0)


# --------------------------------------------------------------------------- adversarial (hinge)

def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss: -E[D(G(z))]."""
    return -fake_logits.mean()


# --------------------------------------------------------------------------- image terms

def reconstruction_loss(normalized: Tensor, original: Tensor, mask: Tensor | None = None) -> Tensor:
    """L1 between I_n and I_o, only for samples where I_t = I_o (``mask``), as in the paper.

    With I_t = I_o the network must reproduce its input, which anchors colours and details.
    """
    per_sample = (normalized - original).abs().flatten(1).mean(1)
    if mask is None:
        return per_sample.mean()
    return masked_mean(per_sample, mask.bool())


FeatureExtractor = Callable[[Tensor], Sequence[Tensor]]


def perceptual_loss(extractor: FeatureExtractor, x: Tensor, y: Tensor,
                    layer_weights: Sequence[float] | None = None) -> Tensor:
    """Sum over layers of the mean absolute difference of feature maps (pluggable extractor)."""
    fx = list(extractor(x))
    fy = list(extractor(y))
    if len(fx) != len(fy):
        raise ValueError(f"extractor returned {len(fx)} maps for x but {len(fy)} for y")
    weights = list(layer_weights) if layer_weights is not None else [1.0] * len(fx)
    if len(weights) != len(fx):
        raise ValueError(f"layer_weights must have {len(fx)} entries, got {len(weights)}")
    total = x.new_zeros(())
    for w, a, b in zip(weights, fx, fy):
        total = total + w * (a - b).abs().mean()
    return total


def identity_loss(emb_target: Tensor, emb_normalized: Tensor) -> Tensor:
    """1 - cos(E_id(I_t), E_id(I_n)), averaged over the batch: I_n must look like the target."""
    return (1.0 - F.cosine_similarity(emb_target, emb_normalized, dim=-1)).mean()


def landmark_loss(lm_target: Tensor, lm_normalized: Tensor,
                  indices: Sequence[int] = CONTOUR_INDICES, scale: float = 1.0) -> Tensor:
    """MSE between the facial-contour landmarks (iBUG 0..16) of I_t and I_n.

    Landmarks are (B, 68, 2); ``scale`` divides both (pass the crop side for pixel coordinates so
    the loss lives on [0, 1] coordinates, where the paper's weight 5000 makes sense). Only the jaw
    line is compared: it carries the target's face shape, while inner points move with expression.
    """
    if lm_target.shape != lm_normalized.shape or lm_target.shape[-2:] != (68, 2):
        raise ValueError(
            f"landmarks must both be (B, 68, 2), got {tuple(lm_target.shape)} and "
            f"{tuple(lm_normalized.shape)}")
    idx = torch.as_tensor(list(indices), device=lm_target.device)
    a = lm_target.index_select(-2, idx) / scale
    b = lm_normalized.index_select(-2, idx) / scale
    return ((a - b) ** 2).mean()


def expression_loss(emb_original: Tensor, emb_normalized: Tensor) -> Tensor:
    """MSE between expression embeddings of I_o and I_n: the expression must survive normalization."""
    return ((emb_original - emb_normalized) ** 2).mean()


def eyebrow_loss(bs_original: Tensor, bs_normalized: Tensor, channels: Sequence[int]) -> Tensor:
    """L1 on the eyebrow channels of a blendshape estimator for I_o vs I_n.

    Brow movements (AU1/2/4) are small in pixels and easily lost; this term protects them.
    """
    if not channels:
        raise ValueError("eyebrow channels must not be empty")
    idx = torch.as_tensor(list(channels), device=bs_original.device)
    return (bs_original.index_select(-1, idx) - bs_normalized.index_select(-1, idx)).abs().mean()


def eyebrow_channels(names: Sequence[str], wanted: Sequence[str] = EYEBROW_BLENDSHAPES) -> list[int]:
    """Indices of the eyebrow channels in a blendshape name list (error if none match)."""
    lower = [n.lower() for n in names]
    found = [i for i, n in enumerate(lower) if any(w.lower() == n for w in wanted)]
    if not found:
        found = [i for i, n in enumerate(lower) if n.startswith("brow")]
    if not found:
        raise ValueError(f"no eyebrow channel among blendshape names {list(names)[:8]}...")
    return found


def pair_loss(normalized: Tensor, true_normalized: Tensor, mask: Tensor | None = None,
              reference: Tensor | None = None, expression_weight: float = 0.0) -> Tensor:
    """L1 to the true I_n where the data has one (synthetic pairs); masked per sample.

    With ``expression_weight`` k > 0 and the neutral target as ``reference``, pixels are weighted
    by 1 + k * |I_n - I_t| / mean|I_n - I_t|: the expression is a small part of the image (mouth,
    eyes, brows), and a plain L1 is minimised early and for long by rendering the neutral target
    for every input. The weights are renormalised to mean 1 per sample, so the scale stays put."""
    err = (normalized - true_normalized).abs()
    if expression_weight > 0 and reference is not None:
        d = (true_normalized - reference).abs().mean(1, keepdim=True)
        w = 1.0 + expression_weight * d / (d.mean((2, 3), keepdim=True) + 1e-6)
        w = w / w.mean((2, 3), keepdim=True)
        err = err * w
    per_sample = err.flatten(1).mean(1)
    if mask is None:
        return per_sample.mean()
    return masked_mean(per_sample, mask.bool())


# --------------------------------------------------------------------------- F_nor total

@dataclass
class NormalizerWeights:
    """Loss weights of F_nor; defaults are the paper's (pair: ours, for synthetic true pairs)."""

    adv: float = 1.0
    rec: float = 10.0
    perc: float = 5.0
    id: float = 10.0
    lm: float = 5000.0
    exp: float = 5000.0
    eye: float = 10.0
    pair: float = 10.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def normalizer_objective(terms: dict[str, Tensor],
                         weights: NormalizerWeights | None = None) -> tuple[Tensor, dict[str, float]]:
    """L = L_adv + 10 L_rec + 5 L_perc + 10 L_id + 5000 L_lm + 5000 L_exp + 10 L_eye (+ pair).

    ``terms`` maps names of :class:`NormalizerWeights` to scalar tensors; missing terms are simply
    absent (e.g. no pair term without synthetic data). Returns the weighted total and a float log of
    every unweighted term plus ``total``.
    """
    w = (weights or NormalizerWeights()).to_dict()
    unknown = set(terms) - set(w)
    if unknown:
        raise ValueError(f"unknown normalizer loss terms {sorted(unknown)}; expected a subset of {sorted(w)}")
    if not terms:
        raise ValueError("normalizer_objective needs at least one term")
    total = sum(w[k] * v for k, v in terms.items())
    assert isinstance(total, Tensor)
    log = {k: float(v.detach()) for k, v in terms.items()}
    log["total"] = float(total.detach())
    return total, log


# --------------------------------------------------------------------------- F_cla

def emotion_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over samples with a known emotion (target >= 0)."""
    valid = target >= 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], target[valid])


def soft_emotion_ce(logits: Tensor, target: Tensor, rows: Tensor) -> Tensor:
    """Cross-entropy to soft labels (distillation) over the rows marked in ``rows``; targets are
    renormalised to sum to 1. A NaN target ("no opinion": no teacher has that class) leaves that
    class out of the student's softmax too, so the teacher neither pushes it down nor up."""
    if not bool(rows.any()):
        return logits.sum() * 0.0
    t = target[rows]
    has = torch.isfinite(t)
    t = torch.where(has, t.clamp(min=0), torch.zeros_like(t))
    t = t / t.sum(dim=1, keepdim=True).clamp(min=1e-8)
    logp = F.log_softmax(logits[rows].masked_fill(~has, float("-inf")), dim=1)
    return -torch.where(has, t * logp, torch.zeros_like(logp)).sum(dim=1).mean()


def au_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on AU occurrence logits, ignoring NaN targets."""
    valid = ~torch.isnan(target)
    t = torch.nan_to_num(target, nan=0.0)
    per = F.binary_cross_entropy_with_logits(logits, t, reduction="none", pos_weight=pos_weight)
    return masked_mean(per, valid)


def au_intensity_l2(pred: Tensor, target: Tensor, scale: float = 1.0) -> Tensor:
    """Squared error on AU intensity (both divided by ``scale``), ignoring NaN targets."""
    valid = ~torch.isnan(target)
    t = torch.nan_to_num(target, nan=0.0)
    per = ((pred - t) / scale) ** 2
    return masked_mean(per, valid)


@dataclass
class ClassificationWeights:
    """L = L_cla + 0.001 L_imp + 0.001 (L_global + L_local), L_cla = sum of the task terms."""

    emotion: float = 1.0
    au_occurrence: float = 1.0
    au_intensity: float = 1.0
    importance: float = 0.001
    balance: float = 0.001  # multiplies L_global + L_local
    intensity_scale: float = 5.0  # intensities compared on [0, 1]


def classification_objective(outputs: dict[str, Tensor], batch: dict[str, Tensor],
                             moe_terms: dict[str, Tensor] | None = None,
                             weights: ClassificationWeights | None = None
                             ) -> tuple[Tensor, dict[str, float]]:
    """Combine the task losses present in ``outputs`` with the MoE balance terms.

    ``outputs`` may hold ``emotion_logits`` (B, E), ``au_logits`` (B, A), ``au_intensity`` (B, A);
    ``batch`` holds the matching ``emotion`` / ``au_occurrence`` / ``au_intensity`` targets.
    ``moe_terms`` holds ``importance``, ``global``, ``local`` scalars (any subset). A head whose
    targets are all unknown in this batch contributes 0, so single-task batches train one head.
    """
    w = weights or ClassificationWeights()
    ref = next(iter(outputs.values()))
    terms: dict[str, Tensor] = {}
    if "emotion_logits" in outputs and "emotion" in batch:
        terms["emotion"] = emotion_ce(outputs["emotion_logits"], batch["emotion"])
    if "au_logits" in outputs and "au_occurrence" in batch:
        terms["au_occurrence"] = au_bce(outputs["au_logits"], batch["au_occurrence"])
    if "au_intensity" in outputs and "au_intensity" in batch:
        terms["au_intensity"] = au_intensity_l2(outputs["au_intensity"], batch["au_intensity"],
                                                scale=w.intensity_scale)
    if not terms:
        raise ValueError(f"no head output matches a target: outputs {sorted(outputs)}, batch {sorted(batch)}")
    cla = ref.new_zeros(())
    for k, v in terms.items():
        cla = cla + getattr(w, k) * v
    total = cla
    moe_terms = moe_terms or {}
    if "importance" in moe_terms:
        total = total + w.importance * moe_terms["importance"]
    bal = [moe_terms[k] for k in ("global", "local") if k in moe_terms]
    if bal:
        total = total + w.balance * sum(bal)
    log = {k: float(v.detach()) for k, v in terms.items()}
    log.update({f"moe_{k}": float(v.detach()) for k, v in moe_terms.items()})
    log["cla"] = float(cla.detach())
    log["total"] = float(total.detach())
    return total, log
