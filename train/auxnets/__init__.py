"""Auxiliary networks for the normalizer losses: load user weights or this project's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from train.auxnets.nets import AUX_KINDS, AuxConfig, AuxNet

META_KEY = "aux_config"


def save_aux(net: AuxNet, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(sd, str(p), metadata={META_KEY: json.dumps(net.cfg.to_dict()), **(extra or {})})
    return p


def load_aux(path: str | Path, kind: str | None = None, frozen: bool = True) -> nn.Module:
    """Load an aux net from ``.safetensors`` (this project's format, config in metadata) or
    ``.onnx`` (any pretrained network, converted to torch with onnx2torch so gradients flow).

    ``kind`` checks that the file holds the expected network. Frozen nets are in eval mode with
    ``requires_grad`` off: they supervise F_nor but are not trained by it.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"aux weights not found: {p}")
    if p.suffix == ".safetensors":
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        if META_KEY not in meta:
            raise ValueError(f"{p}: no '{META_KEY}' metadata; not an aux net written by train_aux")
        cfg = AuxConfig(**json.loads(meta[META_KEY]))
        if kind is not None and cfg.kind != kind:
            raise ValueError(f"{p}: expected a {kind!r} aux net, file holds {cfg.kind!r}")
        net: nn.Module = AuxNet(cfg)
        net.load_state_dict(load_file(str(p)))
    elif p.suffix == ".onnx":
        try:
            from onnx2torch import convert
        except ImportError:
            raise ImportError(
                f"loading the ONNX aux net {p} needs the 'onnx2torch' package (pip install onnx2torch); "
                "or convert the weights to safetensors") from None
        net = convert(str(p))
    else:
        raise ValueError(f"aux weights must be .safetensors or .onnx, got {p.suffix!r} ({p})")
    if frozen:
        net.eval()
        for q in net.parameters():
            q.requires_grad_(False)
    return net


def aux_info(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get(META_KEY, "{}"))


__all__ = ["AUX_KINDS", "AuxConfig", "AuxNet", "aux_info", "load_aux", "save_aux"]
