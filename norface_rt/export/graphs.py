"""Tracing a NorfaceModel's two halves to ONNX graphs that carry the model config.

Uses the classic TorchScript exporter (``dynamo=False``): for this static-shape graph it is fast
(~2 s) and gives plain opset-17 ops that ONNX Runtime fuses well. The dynamo exporter took ~10x
longer, could not down-convert to opset 17 and was not faster in ONNX Runtime. Every file is
written atomically, after ONNX Runtime has loaded it and read its config back.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import onnx
import torch

from norface_rt.config import ModelConfig
from norface_rt.model_set import (
    GEOMETRY_NAME,
    NORMALIZER,
    GraphSpec,
    classifier_spec,
    metadata_for,
    read_graph_config,
)
from norface_rt.models.norface import ClassifierGraph, NorfaceModel, NormalizerGraph

GraphKind = Literal["normalizer", "classifier"]
GRAPH_KINDS: tuple[GraphKind, ...] = ("normalizer", "classifier")


def _spec(graph: GraphKind, cfg: ModelConfig) -> GraphSpec:
    return NORMALIZER if graph == "normalizer" else classifier_spec(cfg)
_NON_ARCH_FIELDS = ("name", "trained", "model_id", "provenance")


def _arch(cfg: ModelConfig) -> dict[str, object]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _NON_ARCH_FIELDS}


def check_model(model: NorfaceModel, cfg: ModelConfig) -> None:
    """Refuse to export a model that is not a NorfaceModel built with ``cfg`` and given a target."""
    if not isinstance(model, NorfaceModel):
        raise TypeError(f"model: expected NorfaceModel, got {type(model).__name__}")
    built, given = _arch(model.cfg), _arch(cfg)
    if built != given:
        diff = sorted(k for k in given if given[k] != built.get(k))
        raise ValueError(f"cfg: differs from the config the model was built with in fields {diff}")
    if not model.has_target:
        raise ValueError("model: no target set; call model.set_target(image) before exporting")


def export_onnx(model: NorfaceModel, cfg: ModelConfig, path: str | os.PathLike[str],
                graph: GraphKind = "normalizer", opset: int = 17) -> Path:
    """Write one half of ``model`` (see :mod:`norface_rt.model_set` for its inputs and outputs)
    with ``cfg`` embedded as metadata; returns the path."""
    if graph not in GRAPH_KINDS:
        raise ValueError(f"graph must be one of {list(GRAPH_KINDS)}, got {graph!r}")
    check_model(model, cfg)
    exported = copy.deepcopy(model).float().cpu().eval()
    return write_graph(trace(exported, cfg, graph, opset), cfg, graph, Path(path))


def trace(model: NorfaceModel, cfg: ModelConfig, graph: GraphKind, opset: int) -> onnx.ModelProto:
    """Trace one half of ``model`` (already a float32 CPU eval copy) to an ONNX proto."""
    spec = _spec(graph, cfg)
    module = NormalizerGraph(model) if graph == "normalizer" else ClassifierGraph(model)
    dummies = tuple(torch.zeros(2, cfg.geometry_dim) if name == GEOMETRY_NAME
                    else torch.zeros(2, cfg.in_chans, cfg.img_size, cfg.img_size)
                    for name in spec.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation / tracer chatter
            torch.onnx.export(
                module, dummies, str(raw), input_names=list(spec.inputs),
                output_names=list(spec.outputs), opset_version=opset, dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in (*spec.inputs, *spec.outputs)},
                do_constant_folding=True,
            )
        return onnx.load(str(raw))


def write_graph(proto: onnx.ModelProto, cfg: ModelConfig, graph: GraphKind, path: Path) -> Path:
    """Embed ``cfg``, check the proto, and write it atomically after ORT has loaded it."""
    spec = _spec(graph, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    del proto.metadata_props[:]
    for k, v in metadata_for(cfg).items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"Norface ({cfg.model_id}); trained={cfg.trained}. {spec.doc}"
    onnx.checker.check_model(proto)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "final.onnx"
        onnx.save(proto, str(staged))
        _verify_loads(staged, cfg, spec)
        os.replace(staged, path)
    return path


def _verify_loads(path: Path, cfg: ModelConfig, spec: GraphSpec) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != list(spec.inputs) or outs != list(spec.outputs):
        raise RuntimeError(f"exported graph has I/O {ins} -> {outs}, expected "
                           f"{list(spec.inputs)} -> {list(spec.outputs)}")
    if read_graph_config(path) != cfg:
        raise RuntimeError(f"{path}: embedded config does not round-trip")
