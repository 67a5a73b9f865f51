from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from norface_rt.models import MoEOutput, NoisyTopKMoE, global_loss, importance_loss, local_loss


@pytest.mark.parametrize(("m", "k"), [(4, 2), (4, 1), (6, 3), (3, 3)])
@pytest.mark.parametrize("training", [False, True])
def test_exactly_k_gates_and_normalised(m: int, k: int, training: bool) -> None:
    moe = NoisyTopKMoE(12, 5, 8, m=m, k=k).train(training)
    o = moe(torch.randn(64, 12))
    assert o.out.shape == (64, 5) and o.gates.shape == (64, m) and o.probs.shape == (64, m)
    assert torch.all((o.gates > 0).sum(1) == k)
    assert torch.allclose(o.gates.sum(1), torch.ones(64))
    assert torch.allclose(o.probs.sum(1), torch.ones(64)) and torch.all(o.probs > 0)


def test_eval_is_deterministic_and_training_is_noisy() -> None:
    moe = NoisyTopKMoE(8, 4, 8, m=4, k=2).eval()
    x = torch.randn(32, 8)
    assert torch.equal(moe(x).gates, moe(x).gates)
    moe.train()
    assert any(not torch.equal(moe(x).gates, moe(x).gates) for _ in range(5))
    assert torch.equal(moe(x).probs, moe.eval()(x).probs)  # probs always from the clean logits
    quiet = NoisyTopKMoE(8, 4, 8, m=4, k=2, noisy=False).train()
    assert torch.equal(quiet(x).gates, quiet(x).gates)


def test_output_is_gated_sum_of_selected_experts() -> None:
    moe = NoisyTopKMoE(8, 4, 16, m=4, k=2).eval()
    x = torch.randn(10, 8)
    o = moe(x)
    experts = moe.experts(x)  # (B, m, out)
    # explicit per-expert MLPs from the stacked weights
    e2 = torch.stack([
        torch.nn.functional.gelu(x @ moe.w1[i] + moe.b1[i]) @ moe.w2[i] + moe.b2[i] for i in range(4)
    ], dim=1)
    assert torch.allclose(experts, e2, atol=1e-5)
    manual = torch.zeros(10, 4)
    for b in range(10):
        for i in torch.nonzero(o.gates[b]).flatten().tolist():
            manual[b] += o.gates[b, i] * e2[b, i]
    assert torch.allclose(o.out, manual, atol=1e-5)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"k must be in \[1, m=4\], got 5"):
        NoisyTopKMoE(8, 4, 8, m=4, k=5)
    with pytest.raises(ValueError, match=r"x: expected \(B, 8\), got \(2, 7\)"):
        NoisyTopKMoE(8, 4, 8)(torch.randn(2, 7))


def _out(gates: list[list[float]], probs: list[list[float]] | None = None) -> MoEOutput:
    g = torch.tensor(gates, dtype=torch.float32)
    return MoEOutput(out=torch.zeros(len(gates), 1), gates=g,
                     probs=g if probs is None else torch.tensor(probs, dtype=torch.float32))


def test_importance_loss_known_values() -> None:
    assert importance_loss(_out([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])).item() == pytest.approx(0.0)
    # importance [2, 0, 0, 0]: mean 0.5, population variance 0.75 -> cv^2 = 3
    assert importance_loss(_out([[1, 0, 0, 0], [1, 0, 0, 0]])).item() == pytest.approx(3.0)
    # importance [1.5, 0.5]: mean 1, variance 0.25 -> 0.25
    assert importance_loss(_out([[0.75, 0.25], [0.75, 0.25]])).item() == pytest.approx(0.25)


def test_global_and_local_loss_known_values() -> None:
    uniform = [[0.25] * 4, [0.25] * 4]
    onehot = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]
    assert global_loss(_out(uniform)).item() == pytest.approx(-math.log(4))
    assert local_loss(_out(uniform)).item() == pytest.approx(math.log(4))
    assert global_loss(_out(onehot)).item() == pytest.approx(-math.log(2))  # mean [.5, .5, 0, 0]
    assert local_loss(_out(onehot)).item() == pytest.approx(0.0, abs=1e-6)
    # source selects gates vs probs
    o = _out(onehot, probs=uniform)
    assert local_loss(o, "gates").item() == pytest.approx(0.0, abs=1e-6)
    assert local_loss(o, "probs").item() == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="source must be"):
        global_loss(o, "logits")  # type: ignore[arg-type]


def test_losses_are_differentiable() -> None:
    moe = NoisyTopKMoE(8, 4, 8).train()
    o = moe(torch.randn(16, 8))
    (importance_loss(o) + global_loss(o) + local_loss(o)).backward()
    assert moe.w_gate.grad is not None and moe.w_gate.grad.abs().sum() > 0


class _Wrap(nn.Module):
    def __init__(self, moe: NoisyTopKMoE) -> None:
        super().__init__()
        self.moe = moe

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.moe(x)
        return o.out, o.gates


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_onnx_export_keeps_top_k(tmp_path: Path) -> None:
    moe = NoisyTopKMoE(8, 4, 8, m=4, k=2).eval()
    path = tmp_path / "moe.onnx"
    x = torch.randn(5, 8)
    torch.onnx.export(_Wrap(moe).eval(), (x,), str(path), input_names=["x"], output_names=["out", "gates"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "b"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(9, 8)
    out, gates = sess.run(None, {"x": x2.numpy()})
    ref = moe(x2)
    assert np.all((gates > 0).sum(1) == 2)
    np.testing.assert_allclose(gates, ref.gates.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(out, ref.out.detach().numpy(), atol=1e-5)
