"""Noisy top-k Mixture-of-Experts block (Shazeer et al., 2017) and its balance losses.

Norface uses MoE blocks so that different experts can specialise (e.g. per identity group or per
dataset); m = 4 experts with k = 2 active per sample in the paper. The losses live here, next to the
block whose routing they regularise, as pure functions of :class:`MoEOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-10


@dataclass
class MoEOutput:
    """out (B, out_dim); gates (B, m) sparse combination weights, exactly k non-zero per row and
    summing to 1; probs (B, m) dense softmax of the clean (noise-free) gate logits."""

    out: torch.Tensor
    gates: torch.Tensor
    probs: torch.Tensor


class NoisyTopKMoE(nn.Module):
    """y = sum_i G(x)_i E_i(x) with G = softmax over the top-k (noisy) gate logits, zero elsewhere.

    Noise ``N(0, 1) * softplus(x W_noise)`` is added only in training mode (and only when ``noisy``),
    so eval and ONNX export are deterministic. Top-k uses ``torch.topk`` + ``scatter``, which export to
    ONNX TopK / ScatterElements. All m experts are evaluated densely (two GEMMs, see forward) and
    combined with the sparse gates: for m = 4 small MLPs that is cheaper on CPU than gathering
    per-sample experts, and the output is identical because non-selected experts weigh exactly 0.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, m: int = 4, k: int = 2,
                 noisy: bool = True) -> None:
        super().__init__()
        if not 1 <= k <= m:
            raise ValueError(f"k must be in [1, m={m}], got {k}")
        self.in_dim, self.out_dim, self.hidden, self.m, self.k = in_dim, out_dim, hidden, m, k
        self.noisy = noisy
        # Small random gate init (Shazeer uses zeros): with zeros, an untrained model in eval mode
        # would always route to experts 0..k-1, hiding routing bugs in plumbing tests.
        self.w_gate = nn.Parameter(torch.randn(in_dim, m) * in_dim**-0.5)
        self.w_noise = nn.Parameter(torch.zeros(in_dim, m))
        bound1, bound2 = in_dim**-0.5, hidden**-0.5
        self.w1 = nn.Parameter(torch.empty(m, in_dim, hidden).uniform_(-bound1, bound1))
        self.b1 = nn.Parameter(torch.zeros(m, hidden))
        self.w2 = nn.Parameter(torch.empty(m, hidden, out_dim).uniform_(-bound2, bound2))
        self.b2 = nn.Parameter(torch.zeros(m, out_dim))

    def gate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sparse gates (B, m), dense clean probs (B, m))."""
        clean = x @ self.w_gate
        logits = clean
        if self.noisy and self.training:
            std = F.softplus(x @ self.w_noise) + 1e-2
            logits = clean + torch.randn_like(clean) * std
        top_vals, top_idx = torch.topk(logits, self.k, dim=-1)
        top_gates = torch.softmax(top_vals, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, top_gates)
        return gates, torch.softmax(clean, dim=-1)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        # All experts' first layers as ONE GEMM (B, in) @ (in, m*hidden): ORT's Einsum is several
        # times slower than MatMul for these shapes. The permute of a weight constant-folds at export.
        w1 = self.w1.permute(1, 0, 2).reshape(self.in_dim, self.m * self.hidden)
        h = F.gelu(x @ w1 + self.b1.reshape(-1))
        return h.reshape(-1, self.m, self.hidden)

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert's output, (B, m, out_dim) (for inspection; forward never materialises it)."""
        return torch.matmul(self._hidden(x).transpose(0, 1), self.w2).transpose(0, 1) + self.b2

    def forward(self, x: torch.Tensor) -> MoEOutput:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected (B, {self.in_dim}), got {tuple(x.shape)}")
        gates, probs = self.gate(x)
        # sum_i g_i (h_i W2_i + b2_i) == [g_1 h_1, ..., g_m h_m] @ [W2_1; ...; W2_m] + g @ b2:
        # the gated second layers collapse into one GEMM as well.
        hg = (self._hidden(x) * gates.unsqueeze(-1)).reshape(-1, self.m * self.hidden)
        out = hg @ self.w2.reshape(self.m * self.hidden, self.out_dim) + gates @ self.b2
        return MoEOutput(out=out, gates=gates, probs=probs)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    # 0 * log 0 := 0, so sparse gate rows have a finite entropy and gradient.
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=-1)


def _dist(o: MoEOutput, source: Literal["probs", "gates"]) -> torch.Tensor:
    if source not in ("probs", "gates"):
        raise ValueError(f"source must be 'probs' or 'gates', got {source!r}")
    return o.probs if source == "probs" else o.gates


def importance_loss(o: MoEOutput) -> torch.Tensor:
    """CV^2 of expert importance (gates summed over the batch), Shazeer et al.'s L_importance.

    Uses the population variance (divide by m): 0 when all experts get equal total weight, and
    defined for m = 1. Multiply by w_importance in training.
    """
    importance = o.gates.sum(dim=0)
    mean = importance.mean()
    var = ((importance - mean) ** 2).mean()
    return var / (mean**2 + _EPS)


def global_loss(o: MoEOutput, source: Literal["probs", "gates"] = "probs") -> torch.Tensor:
    """Minus the entropy of the batch-mean routing distribution: minimal (-log m) when the batch as
    a whole spreads evenly over experts. Natural log."""
    return -_entropy(_dist(o, source).mean(dim=0))


def local_loss(o: MoEOutput, source: Literal["probs", "gates"] = "probs") -> torch.Tensor:
    """Mean per-sample routing entropy: minimal (0) when every sample commits to one expert."""
    return _entropy(_dist(o, source)).mean()
