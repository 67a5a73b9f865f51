"""The FP32-layer matcher on real ONNX graphs: the tiny model set's, and a LayerNorm exported
below opset 17 (where it decomposes into ReduceMean / Pow / Sqrt)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from norface_rt.engines.precision import (
    fp32_reason,
    in_norm_scope,
    onnx_fp32_nodes,
    trt_layer_kind,
    unmatched_patterns,
)


@pytest.mark.parametrize("graph", ["normalizer.onnx", "classifier.onnx"])
def test_finds_every_layernorm_and_softmax_of_the_model_set(tiny_model_dir: Path,
                                                            graph: str) -> None:
    proto = onnx.load(str(tiny_model_dir / graph), load_external_data=False)
    want = [n.name for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    got = onnx_fp32_nodes(proto)
    assert [m.name for m in got] == want
    ops = {m.op for m in got}
    assert ops == {"LayerNormalization", "Softmax"}
    assert sum(m.op == "LayerNormalization" for m in got) >= 10  # encoder blocks, EMM, heads
    assert all(m.reason in ("normalization", "softmax") for m in got)


def test_leaves_pooling_and_matmuls_alone(tiny_model_dir: Path) -> None:
    proto = onnx.load(str(tiny_model_dir / "classifier.onnx"), load_external_data=False)
    pooled = [n.name for n in proto.graph.node if n.op_type == "ReduceMean"]
    assert pooled, "the classifier mean-pools tokens with a ReduceMean"
    matched = {m.name for m in onnx_fp32_nodes(proto)}
    assert not matched & set(pooled)
    assert not any(n.op_type in ("MatMul", "Gemm", "Conv") and n.name in matched
                   for n in proto.graph.node)


def test_decomposed_layernorm_is_matched_as_a_whole(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(16)
            self.proj = torch.nn.Linear(16, 16)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            y = self.proj(self.norm(x))
            return torch.softmax(y, dim=-1) * y.mean(dim=1, keepdim=True)

    path = tmp_path / "ln16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Block().eval(), (torch.zeros(2, 5, 16),), str(path), opset_version=16,
                          dynamo=False, input_names=["x"], output_names=["y"])
    proto = onnx.load(str(path))
    by_name = {n.name: n.op_type for n in proto.graph.node}
    in_norm = {name for name in by_name if name.startswith("/norm/")}
    assert {by_name[n] for n in in_norm} >= {"ReduceMean", "Pow", "Sqrt"}, by_name
    matched = {m.name: m for m in onnx_fp32_nodes(proto)}
    for name in in_norm:
        if by_name[name] in ("ReduceMean", "Pow", "Sqrt"):
            assert name in matched and "inside a normalisation" in matched[name].reason
    outside = [n for n, op in by_name.items() if op == "ReduceMean" and not n.startswith("/norm/")]
    assert outside and not set(outside) & set(matched)
    assert any(m.op == "Softmax" for m in matched.values())


def test_tensorrt_layer_kinds_by_type_and_name() -> None:
    enum_like = SimpleNamespace(name="NORMALIZATION")
    assert trt_layer_kind(enum_like, "/encoder/norm/LayerNormalization") == "normalization"
    assert trt_layer_kind("LayerType.SOFTMAX", "/attn/Softmax") == "softmax"
    assert trt_layer_kind("REDUCE", "/norm1/ReduceMean") == "reduce"
    assert trt_layer_kind("UNARY", "/norm1/Sqrt") == "sqrt"
    assert trt_layer_kind("UNARY", "/mlp/act/Erf") is None
    assert trt_layer_kind("ELEMENTWISE", "/norm1/Pow") == "pow"
    assert trt_layer_kind("ELEMENTWISE", "/norm1/Add") is None
    assert trt_layer_kind("MATRIX_MULTIPLY", "/attn/MatMul") is None


def test_norm_scope_is_not_fooled_by_the_normalizer() -> None:
    assert in_norm_scope("/normalizer/encoder/blocks.0/norm1/ReduceMean")
    assert in_norm_scope("/classifier/head_norm/Sqrt")
    assert in_norm_scope("/m/LayerNorm/Pow")
    assert not in_norm_scope("/normalizer/encoder/blocks.0/attn/Sqrt")
    assert not in_norm_scope("/normalizer/decoder/Pow")
    assert not in_norm_scope("ReduceMean")
    assert fp32_reason("/normalizer/decoder/Pow", "pow") is None


def test_user_patterns_replace_the_rules() -> None:
    assert fp32_reason("/normalizer/emm/MatMul", None, ["*/emm/*"]) == "matches '*/emm/*'"
    assert fp32_reason("/encoder/norm/LayerNormalization", "normalization", ["*/emm/*"]) is None
    names = ["/normalizer/emm/MatMul", "/classifier/head/Gemm"]
    assert unmatched_patterns(["*/emm/*", "*/nope/*"], names) == ["*/nope/*"]
