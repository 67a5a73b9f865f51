"""The MoE balance terms, as wired by the classifier stage, move routing the way they should.

Start from an output MoE whose gate strongly prefers expert 0, then optimise only its gate weights:
importance + global must spread the batch over experts; local must make each sample more decisive.
"""

from __future__ import annotations

import math

import pytest
import torch

from norface_rt.models.registry import create_model
from train.classifier import moe_terms
from train.common import model_config

from train_helpers import TINY_MODEL


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def _setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = model_config({**TINY_MODEL, "moe_noise": False})
    net = create_model("classifier", cfg).train()
    x_o = torch.randn(32, 3, 32, 32)
    x_n = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        out = net(x_n, x_o)
        h = torch.cat([out.moe_normalized.out, out.moe_original.out], 1)
        mu = h.mean(0)
        net.moe_output.w_gate.add_(torch.outer(mu, torch.tensor([1.0, 0.0, 0.0, 0.0])) * 8 / mu.norm() ** 2)
    for p in net.parameters():
        p.requires_grad_(False)
    net.moe_output.w_gate.requires_grad_(True)
    return net, x_n, x_o


def _routing(net: torch.nn.Module, x_n: torch.Tensor, x_o: torch.Tensor) -> tuple[float, float, float]:
    with torch.no_grad():
        o = net(x_n, x_o).moe_output
    imp = o.gates.sum(0)
    cv2 = float(imp.var(unbiased=False) / imp.mean() ** 2)
    return float(_entropy(o.probs.mean(0))), float(_entropy(o.probs).mean()), cv2


def _optimise(net: torch.nn.Module, x_n: torch.Tensor, x_o: torch.Tensor, keys: set[str], steps: int = 60) -> None:
    opt = torch.optim.Adam([net.moe_output.w_gate], lr=0.05)
    for _ in range(steps):
        terms = moe_terms(net(x_n, x_o), ["output"], ["output"])
        loss = sum(v for k, v in terms.items() if k in keys)
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()


def test_importance_and_global_spread_the_batch() -> None:
    net, x_n, x_o = _setup()
    g0, _, cv0 = _routing(net, x_n, x_o)
    assert g0 < 0.5 * math.log(4)  # the skew worked: batch routing is concentrated
    _optimise(net, x_n, x_o, {"importance", "global"})
    g1, _, cv1 = _routing(net, x_n, x_o)
    assert g1 > g0 + 0.3 and g1 > 0.8 * math.log(4), (g0, g1)
    assert cv1 < 0.5 * cv0, (cv0, cv1)


def test_local_makes_samples_decisive() -> None:
    net, x_n, x_o = _setup()
    with torch.no_grad():
        net.moe_output.w_gate.mul_(0.05)  # near-uniform routing per sample
    _, l0, _ = _routing(net, x_n, x_o)
    _optimise(net, x_n, x_o, {"local"})
    _, l1, _ = _routing(net, x_n, x_o)
    assert l1 < 0.7 * l0, (l0, l1)


def test_unknown_block_name_is_rejected() -> None:
    net, x_n, x_o = _setup()
    with pytest.raises(ValueError, match="MoE block must be one of"):
        moe_terms(net(x_n, x_o), ["input"], [])
