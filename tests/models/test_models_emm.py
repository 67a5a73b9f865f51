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
