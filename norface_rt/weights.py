"""A model set's ``weights.safetensors``: the PyTorch side of the model-set format.

Written by the exporter, read by the PyTorch backends and for fine-tuning. Never pickle: weights
are safetensors, with the model config embedded so a weights file separated from its directory
still says which network it belongs to. Needs the ``torch`` extra (entry points check for it
with :func:`norface_rt.extras.require` before importing this module).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from norface_rt.config import ModelConfig
from norface_rt.model_set import CONFIG_FILE, META_CONFIG, WEIGHTS_FILE, ModelSetError
from norface_rt.models.norface import NorfaceModel
from norface_rt.models.registry import create_model


def round_to_fp16(model: NorfaceModel) -> NorfaceModel:
    """A copy whose float parameters and buffers are rounded through fp16 (what fp16 weights hold),
    so graphs exported from it compute exactly what the saved weights compute."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def save_weights(model: NorfaceModel, cfg: ModelConfig, path: str | os.PathLike[str], *,
                 fp16: bool = True) -> Path:
    """Write the state dict (fp16 floats when ``fp16``) with ``cfg`` in the file's metadata."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    p = Path(path)
    save_file(state, str(p), metadata={META_CONFIG: cfg.to_json(),
                                       "dtype": "float16" if fp16 else "float32"})
    return p


def load_torch_model(model_dir: str | os.PathLike[str],
                     device: str | torch.device = "cpu") -> NorfaceModel:
    """Rebuild the NorfaceModel of a model set from config.json + weights.safetensors (eval mode,
    float32)."""
    d = Path(model_dir)
    cfg = ModelConfig.load(d / CONFIG_FILE)
    wpath = d / WEIGHTS_FILE
    if not wpath.is_file():
        raise FileNotFoundError(f"weights not found: {wpath}")
    try:
        with safe_open(str(wpath), framework="pt") as f:
            meta = f.metadata() or {}
        embedded = ModelConfig.from_json(meta[META_CONFIG]) if META_CONFIG in meta else None
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in load_file(str(wpath)).items()}
    except Exception as exc:  # safetensors raises its own types for truncated or garbage files
        raise ModelSetError(f"{wpath}: not a readable safetensors weights file "
                            f"({type(exc).__name__}: {exc})") from exc
    if embedded is not None and embedded != cfg:
        raise ModelSetError(f"{wpath}: embedded config differs from {d / CONFIG_FILE}")
    model = create_model("norface", cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes that disagree with the config
        raise ModelSetError(f"{wpath}: weights do not fit the network {d / CONFIG_FILE} "
                            f"describes: {exc}") from exc
    if missing or unexpected:
        raise ModelSetError(f"{wpath}: state dict mismatch: missing={missing}, "
                            f"unexpected={unexpected}")
    if not model.has_target:
        raise ModelSetError(f"{wpath}: no target tokens stored (target_ready == 0)")
    return model.to(device).eval()
