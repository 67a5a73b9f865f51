"""Stage 4: assemble the trained normalizer + classifier with the fixed target into a model set.

Writes a model set (norface_rt.model_set: config.json, the two ONNX graphs, weights.safetensors and
target.png) through norface_rt.export.save_model_set,
with ``trained = True`` and provenance (data, checkpoints, target, hashes) in the config, so the
runtime loads it like any other model set and its results are no longer flagged untrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from norface_rt.export import save_model_set
from norface_rt.export.untrained import load_target_image
from norface_rt.files import sha256_file
from norface_rt.models.registry import create_model
from train.common import check_keys, load_module_weights, model_config
from train.data.sample import images_to_tensor
from train.geometry import pool_model_fields

DEFAULTS: dict[str, Any] = {"normalizer_weights": None, "classifier_weights": None,
                            "target_image": "synthetic", "out_dir": None, "model_id": None,
                            "fp16_weights": True, "trained": True, "provenance": {},
                            "geometry_pool": None}


def _weights_file(path: str) -> str:
    """The file of a weights reference (``FILE#PREFIX`` names part of a file)."""
    return str(path).split("#", 1)[0]


def run(config: dict[str, Any], resume: bool | str = True) -> Path:
    del resume  # export is a single step
    check_keys("export config", config, {"stage", "model", "export"})
    opts = {**DEFAULTS, **config.get("export", {})}
    check_keys("export", opts, set(DEFAULTS))
    for k in ("normalizer_weights", "classifier_weights", "out_dir"):
        if not opts[k]:
            raise ValueError(f"export.{k} is required")
    model_section = pool_model_fields(opts["geometry_pool"], config.get("model", {}))
    base = model_config(model_section)
    model_id = opts["model_id"] or f"{base.name}-trained"
    provenance = {
        **base.provenance, **opts["provenance"],
        "normalizer_weights_sha256": sha256_file(_weights_file(opts["normalizer_weights"])),
        "classifier_weights_sha256": sha256_file(_weights_file(opts["classifier_weights"])),
        "target": str(opts["target_image"]), "torch": torch.__version__,
    }
    if opts["geometry_pool"]:
        provenance["geometry_pool_sha256"] = sha256_file(opts["geometry_pool"])
    cfg = model_config({**model_section, "trained": bool(opts["trained"]), "model_id": model_id,
                        "provenance": provenance})
    model = create_model("norface", cfg).eval()
    load_module_weights(model.normalizer, opts["normalizer_weights"])
    load_module_weights(model.classifier, opts["classifier_weights"])
    target = load_target_image(opts["target_image"], cfg)
    model.set_target(images_to_tensor(target[None], cfg.mean, cfg.std))
    return save_model_set(model, cfg, opts["out_dir"], fp16_weights=bool(opts["fp16_weights"]),
                          target_image=target)
