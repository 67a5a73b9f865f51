"""Which layers to keep in FP32 inside an otherwise FP16 engine.

Why these: in a ViT, FP16 error concentrates in a few places. LayerNorm computes a variance (a
sum of squares that overflows FP16's 65504 once activations reach a few hundred) and divides by
its square root; softmax exponentiates (attention logits and the MoE gates, where a flipped
top-k choice changes which expert runs at all). Matmuls and convolutions are well behaved in
FP16 with FP32 accumulation, which TensorRT uses. So the matcher pins:

* every normalisation layer (ONNX ``LayerNormalization`` / ``GroupNormalization`` /
  ``InstanceNormalization``; TensorRT ``NORMALIZATION``) and every softmax;
* reductions, powers and square roots that sit inside a normalisation's name scope -- what a
  LayerNorm becomes when it was exported below opset 17 (ReduceMean, Sub, Pow, ReduceMean, Add,
  Sqrt, Div), recognised by a ``norm`` path segment such as ``/blocks.0/norm1/Pow``.

Reductions elsewhere (e.g. token mean-pooling, ``/classifier/ReduceMean``) are left alone.

The same rules apply to ONNX nodes (:func:`onnx_fp32_nodes`, runnable on any machine) and to the
layers of a parsed TensorRT network (:func:`trt_layer_kind` + :func:`fp32_reason`): TensorRT's
ONNX parser names each layer after the node it came from, so both see the same names.
This module imports neither TensorRT nor torch.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Kinds every layer/node is mapped to; None = not a precision-sensitive kind.
NORMALIZATION = "normalization"
SOFTMAX = "softmax"
REDUCE = "reduce"
POW = "pow"
SQRT = "sqrt"

ALWAYS_FP32_KINDS: frozenset[str] = frozenset({NORMALIZATION, SOFTMAX})
NEAR_NORM_KINDS: frozenset[str] = frozenset({REDUCE, POW, SQRT})

_ONNX_KINDS: dict[str, str] = {
    "LayerNormalization": NORMALIZATION,
    "GroupNormalization": NORMALIZATION,
    "InstanceNormalization": NORMALIZATION,
    "SimplifiedLayerNormalization": NORMALIZATION,
    "Softmax": SOFTMAX,
    "LogSoftmax": SOFTMAX,
    "ReduceMean": REDUCE,
    "ReduceSum": REDUCE,
    "ReduceSumSquare": REDUCE,
    "ReduceL2": REDUCE,
    "Pow": POW,
    "Sqrt": SQRT,
}

# A path segment that names a normalisation module: norm, norm1, norm_t, head_norm, LayerNorm,
# layer_norm, rmsnorm, ln_1, ... but not "normalizer" / "normalized" (the first half of Norface).
_NORM_SEGMENT = re.compile(r"[a-z0-9_]*norm(\d*|_[a-z0-9_]*)|ln(_?\d+)?|ln_[a-z0-9_]+",
                           re.IGNORECASE)


def onnx_op_kind(op_type: str) -> str | None:
    """Kind of an ONNX op type, or None when its precision does not need care."""
    return _ONNX_KINDS.get(op_type)


def _enum_name(value: Any) -> str:
    """'NORMALIZATION' from trt.LayerType.NORMALIZATION (pybind11 enum) or a plain string."""
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    return str(value).rsplit(".", 1)[-1]


def _last_segment(name: str) -> str:
    return re.split(r"[/:]", name.rstrip("/"))[-1]


def trt_layer_kind(layer_type: Any, layer_name: str) -> str | None:
    """Kind of a TensorRT network layer. ``layer_type`` is a ``trt.LayerType`` (or its name).

    Unary and elementwise layers cover many operations; reading which one needs a down-cast of
    the Python layer object, so the ONNX node name the parser gave the layer decides instead
    (``.../Sqrt``, ``.../Pow``)."""
    t = _enum_name(layer_type).upper()
    if t == "NORMALIZATION":
        return NORMALIZATION
    if t in ("SOFTMAX", "RAGGED_SOFTMAX"):
        return SOFTMAX
    if t == "REDUCE":
        return REDUCE
    last = _last_segment(layer_name).lower()
    if t == "UNARY" and last.startswith("sqrt"):
        return SQRT
    if t == "ELEMENTWISE" and last.startswith("pow"):
        return POW
    return None


def in_norm_scope(name: str) -> bool:
    """True when a path segment of ``name`` before its last one names a normalisation module
    (``/encoder/blocks.0/norm1/ReduceMean`` yes, ``/classifier/ReduceMean`` no)."""
    scopes = re.split(r"[/:]", name.strip("/"))[:-1]
    segments = (seg for scope in scopes for seg in scope.split("."))
    return any(_NORM_SEGMENT.fullmatch(seg) for seg in segments)


def fp32_reason(name: str, kind: str | None, patterns: Sequence[str] = ()) -> str | None:
    """Why the layer/node ``name`` of ``kind`` should run in FP32, or None.

    Without ``patterns`` the built-in rules apply (module docstring). With ``patterns`` (glob
    patterns over the full name, e.g. ``*/emm/*``) only the patterns decide: the user asked for
    exactly those layers."""
    if patterns:
        for p in patterns:
            if fnmatch.fnmatchcase(name, p):
                return f"matches {p!r}"
        return None
    if kind in ALWAYS_FP32_KINDS:
        return kind
    if kind in NEAR_NORM_KINDS and in_norm_scope(name):
        return f"{kind} inside a normalisation"
    return None


@dataclass(frozen=True)
class Fp32Match:
    name: str
    op: str  # ONNX op type or TensorRT layer type name
    reason: str


def onnx_fp32_nodes(model: str | os.PathLike[str] | Any,
                    patterns: Sequence[str] = ()) -> list[Fp32Match]:
    """The nodes of an ONNX graph (a path or a loaded ModelProto) the rules would pin to FP32,
    in graph order. Weights are not loaded."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(
        str(model), load_external_data=False)
    out: list[Fp32Match] = []
    for node in proto.graph.node:
        reason = fp32_reason(node.name, onnx_op_kind(node.op_type), patterns)
        if reason is not None:
            out.append(Fp32Match(node.name, node.op_type, reason))
    return out


def unmatched_patterns(patterns: Sequence[str], names: Iterable[str]) -> list[str]:
    """The patterns that match none of ``names`` (a typo would otherwise pin nothing, silently)."""
    names = list(names)
    return [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]


__all__ = ["ALWAYS_FP32_KINDS", "Fp32Match", "NEAR_NORM_KINDS", "fp32_reason", "in_norm_scope",
           "onnx_fp32_nodes", "onnx_op_kind", "trt_layer_kind", "unmatched_patterns"]
