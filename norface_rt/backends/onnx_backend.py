"""ONNX Runtime backend: the default, CPU-first runtime (CUDA EP used when the GPU build is present)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from norface_rt.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend, config_from_metadata
from norface_rt.config import ModelConfig

ONNX_FILE = "norface.onnx"
CONFIG_FILE = "config.json"


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed, CPU always as the fallback."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtBackend(Backend):
    """Runs ``norface.onnx``; the config comes from the ONNX metadata, never from the caller.

    ``model`` is a model-set directory or an ``.onnx`` file. A ``config.json`` beside the ONNX must
    agree with the embedded config (a mismatch means a half-updated model set and is an error).
    ``intra_op_threads`` None lets ORT pick (all cores); set it when sharing the CPU with decoding
    and face detection.
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str], providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None) -> None:
        p = Path(model)
        onnx_path = p / ONNX_FILE if p.is_dir() else p
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = ORT default), got {intra_op_threads}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        chosen = list(providers) if providers is not None else default_providers()
        unknown = [pr for pr in chosen if pr not in ort.get_available_providers()]
        if unknown:
            raise ValueError(
                f"providers: {unknown} not available; this onnxruntime offers {ort.get_available_providers()}"
            )
        self.onnx_path = onnx_path
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=chosen)
        self.providers: list[str] = self.session.get_providers()
        self.config: ModelConfig = config_from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(onnx_path))
        cfg_json = onnx_path.parent / CONFIG_FILE
        if cfg_json.is_file():
            on_disk = ModelConfig.load(cfg_json)
            if on_disk != self.config:
                a, b = on_disk.to_dict(), self.config.to_dict()
                diff = sorted(k for k in a if a[k] != b.get(k))
                raise ValueError(f"{cfg_json} disagrees with the config embedded in {onnx_path} "
                                 f"in fields {diff}")
        inp = self.session.get_inputs()[0]
        outs = [o.name for o in self.session.get_outputs()]
        if inp.name != INPUT_NAME or sorted(outs) != sorted(OUTPUT_NAMES):
            raise ValueError(f"{onnx_path}: expected I/O {INPUT_NAME} -> {list(OUTPUT_NAMES)}, "
                             f"got {inp.name} -> {outs}")

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        normalized, au_prob, au_int, emo = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return normalized, au_prob, au_int, emo
