from __future__ import annotations

import pytest
import torch

from norface_rt.models import ExpressionMergingModule


def _emm() -> ExpressionMergingModule:
    return ExpressionMergingModule(32, 4, num_blocks=2).eval()


def test_shapes_and_target_broadcast() -> None:
    emm = _emm()
    t, o = torch.randn(1, 16, 32), torch.randn(3, 16, 32)
    out = emm(t, o)
    assert out.shape == (3, 16, 32)
    assert torch.allclose(out, emm(t.expand(3, -1, -1), o), atol=1e-6)
    assert emm.attention(t, o).shape == (3, 4, 16, 16)
    # different token counts (cls-token encoders) are fine: output follows the target
    assert emm(torch.randn(1, 17, 32), o).shape == (3, 17, 32)
    with pytest.raises(ValueError, match="expected last dim 32"):
        emm(t, torch.randn(3, 16, 16))


def test_output_depends_on_original() -> None:
    emm = _emm()
    t, o = torch.randn(1, 16, 32), torch.randn(2, 16, 32)
    base = emm(t, o)
    o2 = o.clone()
    o2[1, 5] += torch.randn(32)  # change one token of the second face only (not a constant
    # shift: LayerNorm would remove that)
    out = emm(t, o2)
    assert torch.allclose(out[0], base[0], atol=1e-6)
    assert (out[1] - base[1]).abs().max() > 1e-3


def test_merge_matches_paper_formula() -> None:
    """W_o [softmax(Q_t K_o^T / sqrt(d)) V_o + V_t], heads concatenated."""
    emm = _emm()
    t, o = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    ca = emm.attention(t, o)
    assert torch.allclose(ca.sum(-1), torch.ones(2, 4, 16), atol=1e-6)
    v_o = emm.v(emm.norm_o(o)).reshape(2, 16, 4, 8).transpose(1, 2)
    v_t = emm.v(emm.norm_t(t)).reshape(2, 16, 4, 8).transpose(1, 2)
    v_fu = ca @ v_o + v_t
    manual = emm.proj(v_fu.transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(emm.merge(t, o), manual, atol=1e-5)


def test_uniform_attention_reduces_to_mean_original_plus_target() -> None:
    emm = _emm()
    with torch.no_grad():
        emm.q.weight.zero_()
        emm.q.bias.zero_()
    t, o = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    ca = emm.attention(t, o)
    assert torch.allclose(ca, torch.full_like(ca, 1 / 16))
    expected = emm.proj(emm.v(emm.norm_o(o)).mean(1, keepdim=True) + emm.v(emm.norm_t(t)))
    assert torch.allclose(emm.merge(t, o), expected, atol=1e-5)
    # uniform attention ignores where in the original each token sits: the target keeps the layout
    perm = torch.randperm(16)
    assert torch.allclose(emm(t, o[:, perm]), emm(t, o), atol=1e-5)


def _emm_prior(prior: float = 4.0) -> ExpressionMergingModule:
    return ExpressionMergingModule(32, 4, num_blocks=1, num_tokens=16, position_prior=prior).eval()


def test_position_prior_starts_on_the_same_place() -> None:
    emm = _emm_prior()
    assert emm.position_bias is not None and emm.position_bias.requires_grad
    assert torch.equal(emm.position_bias, torch.eye(16) * 4)
    t, o = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    ca = emm.attention(t, o)
    diag = ca.diagonal(dim1=-2, dim2=-1)
    # e^4 / (e^4 + 15) = 0.78 with flat logits; random projections move it a little
    assert float(diag.mean()) > 0.6
    assert float((ca.argmax(-1) == torch.arange(16)).float().mean()) > 0.9
    # merge (fused SDPA with the bias as mask) is the explicit formula with the biased softmax
    v_o = emm.v(emm.norm_o(o)).reshape(2, 16, 4, 8).transpose(1, 2)
    v_t = emm.v(emm.norm_t(t)).reshape(2, 16, 4, 8).transpose(1, 2)
    manual = emm.proj((ca @ v_o + v_t).transpose(1, 2).reshape(2, 16, 32))
    assert torch.allclose(emm.merge(t, o), manual, atol=1e-5)
    # with the prior, the layout of the original matters (without it, see the uniform test above)
    perm = torch.randperm(16)
    assert not torch.allclose(emm(t, o[:, perm]), emm(t, o), atol=1e-3)


def test_position_prior_checks_token_counts_and_stays_out_of_the_plain_state_dict() -> None:
    emm = _emm_prior()
    with pytest.raises(ValueError, match="expects 16 target and 16 original tokens, got 17 and 16"):
        emm(torch.randn(1, 17, 32), torch.randn(2, 16, 32))
    with pytest.raises(ValueError, match="num_tokens must be >= 1 with a position prior, got 0"):
        ExpressionMergingModule(32, 4, position_prior=2.0)
    assert "position_bias" in emm.state_dict()
    # prior 0 is the paper's module: no extra parameter, so weight files without it still load
    assert "position_bias" not in _emm().state_dict()
