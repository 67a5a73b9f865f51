"""A complete model set in one call (:func:`save_model_set`), in the format of
:mod:`norface_rt.model_set`."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.export.graphs import GRAPH_KINDS, check_model, trace, write_graph
from norface_rt.images import write_rgb
from norface_rt.model_set import CONFIG_FILE, TARGET_FILE, WEIGHTS_FILE, GraphSpec, write_manifest
from norface_rt.model_set import GRAPHS as SET_GRAPHS
from norface_rt.models.norface import NorfaceModel
from norface_rt.weights import round_to_fp16, save_weights


def save_model_set(model: NorfaceModel, cfg: ModelConfig, out_dir: str | os.PathLike[str], *,
                   fp16_weights: bool = True, opset: int = 17,
                   target_image: np.ndarray | None = None) -> Path:
    """Write normalizer.onnx + classifier.onnx (fp32 graphs), weights.safetensors, config.json
    and, last, manifest.json (sha256 of each file, checked at every load) into ``out_dir``; with
    ``target_image`` (the aligned (S, S, 3) uint8 RGB crop the
    target tokens were computed from) also target.png, so users can see who faces are normalized
    onto (``norface-rt normalize``).

    With ``fp16_weights`` the weights are rounded to fp16 *before* the ONNX export, so both files
    encode exactly the same network and the backends agree to float32 rounding."""
    check_model(model, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if target_image is not None:
        img = np.asarray(target_image)
        if img.shape != (cfg.img_size, cfg.img_size, 3) or img.dtype != np.uint8:
            raise ValueError(f"target_image: expected ({cfg.img_size}, {cfg.img_size}, 3) uint8, "
                             f"got {img.shape} {img.dtype}")
        write_rgb(out / TARGET_FILE, img)
    if fp16_weights:
        model = round_to_fp16(model)
    exported = copy.deepcopy(model).float().cpu().eval()
    specs: dict[str, GraphSpec] = {g.name: g for g in SET_GRAPHS}
    for kind in GRAPH_KINDS:
        write_graph(trace(exported, cfg, kind, opset), cfg, kind, out / specs[kind].file)
    save_weights(model, cfg, out / WEIGHTS_FILE, fp16=fp16_weights)
    cfg.save(out / CONFIG_FILE)  # its presence marks a complete model set
    write_manifest(out)  # last: covers every file above
    return out
