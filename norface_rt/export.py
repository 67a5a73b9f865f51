"""Export a NorfaceModel to ONNX and read/write complete model sets.

A *model set* is a directory holding everything the runtime needs, and nothing it must guess:

* ``config.json``          -- the :class:`~norface_rt.config.ModelConfig` (also embedded in the ONNX);
* ``norface.onnx``         -- fp32 inference graph, input ``face`` (B, 3, S, S) normalised float32,
  outputs ``normalized``, ``au_prob``, ``au_intensity``, ``emotion_prob``; dynamic batch axis;
* ``normalizer.onnx``      -- its first half: ``face`` -> ``normalized`` (target tokens baked in);
* ``classifier.onnx``      -- its second half: ``normalized``, ``face`` -> ``au_prob``,
  ``au_intensity``, ``emotion_prob``. Running the two in sequence gives the combined graph's
  outputs (to float32 rounding) and lets the runtime time and place each stage on its own;
  all three carry the same embedded config;
* ``weights.safetensors``  -- the state dict (fp16 by default) including the cached target tokens,
  for the PyTorch backend and for fine-tuning. Never pickle.

With ``fp16_weights`` the weights are rounded to fp16 *before* the ONNX export, so both files encode
exactly the same network and the two backends agree to float32 rounding.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx.compose
import onnx.helper
import torch
from safetensors.torch import load_file, save_file

from norface_rt.backends.base import (
    CLASSIFIER_FILE,
    CLASSIFIER_INPUTS,
    CLASSIFIER_OUTPUTS,
    INPUT_NAME,
    META_CONFIG,
    META_MODEL_ID,
    META_TRAINED,
    NORMALIZER_FILE,
    NORMALIZER_INPUTS,
    NORMALIZER_OUTPUTS,
    OUTPUT_NAMES,
    config_from_metadata,
    preprocess,
)
from norface_rt.config import ModelConfig
from norface_rt.models.norface import ClassifierGraph, NormalizerGraph, NorfaceModel
from norface_rt.models.registry import create_model

CONFIG_FILE = "config.json"
ONNX_FILE = "norface.onnx"
WEIGHTS_FILE = "weights.safetensors"
TARGET_FILE = "target.png"

GraphKind = Literal["combined", "normalizer", "classifier"]
GRAPH_KINDS: tuple[GraphKind, ...] = ("combined", "normalizer", "classifier")


@dataclass(frozen=True)
class _GraphSpec:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    doc: str


_GRAPHS: dict[GraphKind, _GraphSpec] = {
    "combined": _GraphSpec((INPUT_NAME,), OUTPUT_NAMES,
                           "Input 'face': (B,3,S,S) float32, (x/255-mean)/std per config."),
    "normalizer": _GraphSpec(NORMALIZER_INPUTS, NORMALIZER_OUTPUTS,
                             "Normalizer half. Input 'face': (B,3,S,S) float32, (x/255-mean)/std "
                             "per config; output 'normalized' in the same pixel space."),
    "classifier": _GraphSpec(CLASSIFIER_INPUTS, CLASSIFIER_OUTPUTS,
                             "Classifier half. Inputs 'normalized' (the normalizer's output) and "
                             "'face' (the normalizer's input), both (B,3,S,S) float32."),
}


_NON_ARCH_FIELDS = ("name", "trained", "model_id", "provenance")


def _arch(cfg: ModelConfig) -> dict[str, object]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _NON_ARCH_FIELDS}


def _check_model(model: NorfaceModel, cfg: ModelConfig) -> None:
    if not isinstance(model, NorfaceModel):
        raise TypeError(f"model: expected NorfaceModel, got {type(model).__name__}")
    built, given = _arch(model.cfg), _arch(cfg)
    if built != given:
        diff = sorted(k for k in given if given[k] != built.get(k))
        raise ValueError(f"cfg: differs from the config the model was built with in fields {diff}")
    if not model.has_target:
        raise ValueError("model: no target set; call model.set_target(image) before exporting")


def export_onnx(model: NorfaceModel, cfg: ModelConfig, path: str | os.PathLike[str],
                opset: int = 17, graph: GraphKind = "combined") -> Path:
    """Write an inference graph with ``cfg`` embedded as metadata; returns the path.

    ``graph`` picks the combined graph (``norface.onnx``) or one of its halves (see the module
    docstring for their inputs and outputs). The combined graph is the two halves joined (each
    half traced once), so it and the split pair always hold exactly the same operators.

    Uses the classic TorchScript exporter (``dynamo=False``; torch is pinned, so its deprecation is
    not a risk here): for this static-shape graph it is fast (~2 s) and gives plain opset-17 ops that
    ORT fuses well. The dynamo exporter took ~10x longer, could not down-convert to opset 17 and was
    not faster in ORT. The file is written atomically and checked by loading it in ONNX Runtime.
    """
    if graph not in _GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPH_KINDS)}, got {graph!r}")
    _check_model(model, cfg)
    model = copy.deepcopy(model).float().cpu().eval()
    if graph == "combined":
        proto = _join(_trace(model, cfg, "normalizer", opset), _trace(model, cfg, "classifier", opset))
    else:
        proto = _trace(model, cfg, graph, opset)
    return _write(proto, cfg, graph, Path(path))


def _trace(model: NorfaceModel, cfg: ModelConfig, graph: GraphKind, opset: int) -> onnx.ModelProto:
    """Trace one half of ``model`` (already a float32 CPU eval copy) to an ONNX proto."""
    spec = _GRAPHS[graph]
    module = NormalizerGraph(model) if graph == "normalizer" else ClassifierGraph(model)
    dummies = tuple(torch.zeros(2, cfg.in_chans, cfg.img_size, cfg.img_size)
                    for _ in spec.inputs)
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


def _join(normalizer: onnx.ModelProto, classifier: onnx.ModelProto) -> onnx.ModelProto:
    """The combined graph: the normalizer's nodes, then the classifier's, sharing ``face`` and
    feeding ``normalized`` across. Internal names get a per-half prefix (two separate traces may
    both use e.g. ``onnx::MatMul_123``); the graph inputs and outputs keep their names."""
    g1 = onnx.compose.add_prefix_graph(normalizer.graph, "normalizer/", rename_inputs=False,
                                       rename_outputs=False)
    g2 = onnx.compose.add_prefix_graph(classifier.graph, "classifier/", rename_inputs=False,
                                       rename_outputs=False)
    face1 = next(i for i in g1.input if i.name == INPUT_NAME)
    face2 = next(i for i in g2.input if i.name == INPUT_NAME)
    if face1.type != face2.type:
        raise RuntimeError(f"cannot join the halves: input {INPUT_NAME!r} has type {face1.type} "
                           f"in the normalizer but {face2.type} in the classifier")
    joined = onnx.helper.make_graph(
        [*g1.node, *g2.node], "norface", [face1], [*g1.output, *g2.output],
        initializer=[*g1.initializer, *g2.initializer],
        value_info=[*g1.value_info, *g2.value_info])
    if normalizer.opset_import != classifier.opset_import:
        raise RuntimeError("cannot join the halves: they were exported with different opsets")
    return onnx.helper.make_model(joined, opset_imports=list(normalizer.opset_import),
                                  ir_version=normalizer.ir_version,
                                  producer_name=normalizer.producer_name,
                                  producer_version=normalizer.producer_version)


def _write(proto: onnx.ModelProto, cfg: ModelConfig, graph: GraphKind, path: Path) -> Path:
    """Embed ``cfg``, check the proto, and write it atomically after ORT has loaded it."""
    spec = _GRAPHS[graph]
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {META_CONFIG: cfg.to_json(), META_MODEL_ID: cfg.model_id,
            META_TRAINED: str(cfg.trained).lower()}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"Norface ({cfg.model_id}); trained={cfg.trained}. {spec.doc}"
    onnx.checker.check_model(proto)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "final.onnx"
        onnx.save(proto, str(staged))
        _verify_loads(staged, cfg, spec)
        os.replace(staged, path)
    return path


def _verify_loads(path: Path, cfg: ModelConfig, spec: _GraphSpec) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != list(spec.inputs) or outs != list(spec.outputs):
        raise RuntimeError(f"exported graph has I/O {ins} -> {outs}, expected "
                           f"{list(spec.inputs)} -> {list(spec.outputs)}")
    if config_from_metadata(sess.get_modelmeta().custom_metadata_map, str(path)) != cfg:
        raise RuntimeError(f"{path}: embedded config does not round-trip")


def read_onnx_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The ModelConfig embedded in an exported ONNX file (weights are not loaded)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model not found: {p}")
    proto = onnx.load(str(p), load_external_data=False)
    return config_from_metadata({m.key: m.value for m in proto.metadata_props}, str(p))


def _round_to_fp16(model: NorfaceModel) -> NorfaceModel:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def save_model_set(model: NorfaceModel, cfg: ModelConfig, out_dir: str | os.PathLike[str], *,
                   fp16_weights: bool = True, opset: int = 17,
                   target_image: np.ndarray | None = None) -> Path:
    """Write config.json, norface.onnx + normalizer.onnx + classifier.onnx (fp32 graphs) and
    weights.safetensors into ``out_dir``; with ``target_image`` (the aligned (S, S, 3) uint8 RGB crop
    the target tokens were computed from) also target.png, so users can see who faces are
    normalized onto (``norface-rt normalize``)."""
    _check_model(model, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if target_image is not None:
        import cv2

        img = np.asarray(target_image)
        if img.shape != (cfg.img_size, cfg.img_size, 3) or img.dtype != np.uint8:
            raise ValueError(f"target_image: expected ({cfg.img_size}, {cfg.img_size}, 3) uint8, "
                             f"got {img.shape} {img.dtype}")
        cv2.imwrite(str(out / TARGET_FILE), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if fp16_weights:
        model = _round_to_fp16(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fp16_weights:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    exported = copy.deepcopy(model).float().cpu().eval()
    halves = [_trace(exported, cfg, g, opset) for g in ("normalizer", "classifier")]
    combined = _join(*halves)
    _write(combined, cfg, "combined", out / ONNX_FILE)
    _write(halves[0], cfg, "normalizer", out / NORMALIZER_FILE)
    _write(halves[1], cfg, "classifier", out / CLASSIFIER_FILE)
    save_file(state, str(out / WEIGHTS_FILE),
              metadata={META_CONFIG: cfg.to_json(), "dtype": "float16" if fp16_weights else "float32"})
    cfg.save(out / CONFIG_FILE)  # last: its presence marks a complete model set (paths._is_model_dir)
    return out


def load_torch_model(model_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> NorfaceModel:
    """Rebuild the NorfaceModel of a model set from config.json + weights.safetensors (eval mode,
    float32)."""
    d = Path(model_dir)
    cfg = ModelConfig.load(d / CONFIG_FILE)
    wpath = d / WEIGHTS_FILE
    if not wpath.is_file():
        raise FileNotFoundError(f"weights not found: {wpath}")
    from safetensors import safe_open

    with safe_open(str(wpath), framework="pt") as f:
        meta = f.metadata() or {}
    if META_CONFIG in meta and ModelConfig.from_json(meta[META_CONFIG]) != cfg:
        raise ValueError(f"{wpath}: embedded config differs from {d / CONFIG_FILE}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(wpath)).items()}
    model = create_model("norface", cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{wpath}: state dict mismatch: missing={missing}, unexpected={unexpected}")
    if not model.has_target:
        raise ValueError(f"{wpath}: no target tokens stored (target_ready == 0)")
    return model.to(device).eval()


def synthetic_target_image(size: int, template: tuple[tuple[float, float], ...]) -> np.ndarray:
    """A deterministic, procedurally drawn neutral 'face' (no real person), (S, S, 3) uint8 RGB.

    Used as the target identity of untrained model sets so they are reproducible and free of any
    image licence. Soft-edged shapes (skin oval, eyes, brows, nose, mouth) are placed on the
    alignment template, so the drawing is aligned exactly like real crops.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = template

    def soft(d: np.ndarray, edge: float = 0.01) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(np.clip(d / edge, -50, 50)))  # 1 inside (d < 0), 0 outside

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return soft(np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) - 1.0, 0.05)

    img = np.empty((size, size, 3))
    img[:] = (0.80, 0.82, 0.86)
    img *= (1.0 - 0.15 * yy)[..., None]  # gentle vertical background gradient
    cx = (rex + lex) / 2
    face = ellipse(cx, (rey + lmy) / 2 + 0.02, 0.34, 0.46)
    img = img * (1 - face[..., None]) + face[..., None] * np.array([0.87, 0.70, 0.60])
    shade = 1.0 - 0.10 * np.clip(np.abs(xx - cx) / 0.34, 0, 1) ** 2
    img *= np.where(face[..., None] > 0.5, shade[..., None], 1.0)

    def paint(mask: np.ndarray, rgb: tuple[float, float, float]) -> None:
        nonlocal img
        img = img * (1 - mask[..., None]) + mask[..., None] * np.array(rgb)

    eye_w = (lex - rex) * 0.28
    for ex, ey in ((rex, rey), (lex, ley)):
        paint(ellipse(ex, ey, eye_w, eye_w * 0.45), (0.95, 0.95, 0.95))
        paint(ellipse(ex, ey, eye_w * 0.42, eye_w * 0.42), (0.30, 0.22, 0.16))
        paint(ellipse(ex, ey - 0.07, eye_w * 1.1, eye_w * 0.18), (0.35, 0.25, 0.20))
    paint(ellipse(nx, ny - 0.02, 0.035, 0.07) * 0.25, (0.70, 0.52, 0.45))
    paint(ellipse(nx, ny + 0.01, 0.05, 0.02) * 0.5, (0.62, 0.45, 0.40))
    paint(ellipse((rmx + lmx) / 2, (rmy + lmy) / 2, (lmx - rmx) / 2, 0.018), (0.70, 0.36, 0.36))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _load_target(target_image: np.ndarray | str | os.PathLike[str], size: int) -> tuple[np.ndarray, str]:
    if isinstance(target_image, (str, os.PathLike)):
        import cv2

        p = Path(target_image)
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"target_image: cannot read image file {p}")
        if bgr.shape[0] != bgr.shape[1]:
            raise ValueError(
                f"target_image: expected an aligned square crop, got {bgr.shape[1]}x{bgr.shape[0]} ({p})"
            )
        if bgr.shape[0] != size:
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
        img = np.ascontiguousarray(bgr[:, :, ::-1])
        what = f"image file {p.name}"
    else:
        img = np.asarray(target_image)
        if img.dtype != np.uint8 or img.shape != (size, size, 3):
            raise ValueError(
                f"target_image: expected ({size}, {size}, 3) uint8, got {img.shape} {img.dtype}"
            )
        what = "user-supplied array"
    return img, f"{what}, sha256 {hashlib.sha256(img.tobytes()).hexdigest()}"


def init_untrained(out_dir: str | os.PathLike[str], size: str = "small", seed: int = 0,
                   target_image: np.ndarray | str | os.PathLike[str] | None = None) -> Path:
    """Create a randomly initialised (cfg.trained = False) model set for tests and demos.

    Its outputs are meaningless; the runtime flags every result from it as untrained. Without
    ``target_image`` the target is :func:`synthetic_target_image`, recorded in the provenance.
    """
    cfg = ModelConfig.for_size(size)
    if target_image is None:
        target = synthetic_target_image(cfg.img_size, cfg.template)
        target_desc = ("synthetic: norface_rt.export.synthetic_target_image (procedural drawing, "
                       "no real person)")
    else:
        target, target_desc = _load_target(target_image, cfg.img_size)
    cfg = ModelConfig.for_size(
        size, trained=False, model_id=f"norface-{size}-untrained",
        provenance={"weights": f"random initialisation, torch.manual_seed({seed})",
                    "target": target_desc, "torch": torch.__version__,
                    "note": "UNTRAINED: outputs carry no information about the face"},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("norface", cfg).eval()
    model.set_target(torch.from_numpy(preprocess(target[None], cfg)))
    return save_model_set(model, cfg, out_dir, target_image=target)
