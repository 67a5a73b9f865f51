"""ONNX Runtime backend: the default, CPU-first runtime (CUDA EP used when the GPU build is present).

A model set exported by this version holds the combined graph ``norface.onnx`` and its two halves
``normalizer.onnx`` / ``classifier.onnx``. The backend prefers the halves (one session each, run in
sequence) so it can report how long normalization and classification take; model sets written
before the split existed only have ``norface.onnx`` and still load, reporting one ``"infer"``
timing instead.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from norface_rt.backends.base import (
    CLASSIFIER_FILE,
    CLASSIFIER_INPUTS,
    CLASSIFIER_OUTPUTS,
    INPUT_NAME,
    NORMALIZED_NAME,
    NORMALIZER_FILE,
    NORMALIZER_INPUTS,
    NORMALIZER_OUTPUTS,
    OUTPUT_NAMES,
    TIMING_CLASSIFY,
    TIMING_INFER,
    TIMING_NORMALIZE,
    Backend,
    Outputs,
    config_from_metadata,
)
from norface_rt.config import ModelConfig

log = logging.getLogger(__name__)

ONNX_FILE = "norface.onnx"
CONFIG_FILE = "config.json"


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed, CPU always as the fallback."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))


class OrtBackend(Backend):
    """Runs a model set's ONNX graphs; the config comes from the ONNX metadata, never the caller.

    ``model`` is a model-set directory or one combined ``.onnx`` file. For a directory, ``split``
    None (default) uses ``normalizer.onnx`` + ``classifier.onnx`` when both exist and
    ``norface.onnx`` otherwise; True requires the split graphs; False forces the combined one.
    Every graph loaded, and a ``config.json`` beside them, must carry the same config (a mismatch
    means a half-updated model set and is an error). ``intra_op_threads`` None lets ORT pick (all
    cores); set it when sharing the CPU with decoding and face detection.
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str], providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, split: bool | None = None) -> None:
        if split is not None and not isinstance(split, bool):
            raise ValueError(f"split must be True, False or None (auto), got {split!r}")
        p = Path(model)
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = ORT default), got {intra_op_threads}")
        paths = self._choose_files(p, split)
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
        if len(paths) == 2:
            # Each session owns an intra-op pool; a pool spinning after its run would steal the
            # cores the next session's run needs (measured: ~15-25 % slower at batch 8, 2 cores).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = [ort.InferenceSession(str(f), sess_options=opts, providers=chosen)
                    for f in paths]
        configs = [config_from_metadata(s.get_modelmeta().custom_metadata_map, str(f))
                   for s, f in zip(sessions, paths)]
        for f, c in zip(paths[1:], configs[1:]):
            if c != configs[0]:
                raise ValueError(f"{f} disagrees with the config embedded in {paths[0]} in fields "
                                 f"{_config_diff(configs[0], c)}")
        self.config: ModelConfig = configs[0]
        self.onnx_paths: list[Path] = paths
        self.onnx_path = paths[0]  # the combined graph, or the normalizer when split
        self.split = len(paths) == 2
        cfg_json = paths[0].parent / CONFIG_FILE
        if cfg_json.is_file():
            on_disk = ModelConfig.load(cfg_json)
            if on_disk != self.config:
                raise ValueError(f"{cfg_json} disagrees with the config embedded in {paths[0]} "
                                 f"in fields {_config_diff(on_disk, self.config)}")
        if self.split:
            self._check_io(sessions[0], paths[0], NORMALIZER_INPUTS, NORMALIZER_OUTPUTS)
            self._check_io(sessions[1], paths[1], CLASSIFIER_INPUTS, CLASSIFIER_OUTPUTS)
            self.session: ort.InferenceSession | None = None
            self.normalizer_session: ort.InferenceSession | None = sessions[0]
            self.classifier_session: ort.InferenceSession | None = sessions[1]
        else:
            self._check_io(sessions[0], paths[0], (INPUT_NAME,), OUTPUT_NAMES)
            self.session = sessions[0]
            self.normalizer_session = self.classifier_session = None
        self.providers: list[str] = sessions[0].get_providers()

    @staticmethod
    def _choose_files(p: Path, split: bool | None) -> list[Path]:
        if not p.is_dir():
            if not p.is_file():
                raise FileNotFoundError(f"ONNX model not found: {p}")
            if split:
                raise ValueError(f"split=True needs a model-set directory holding {NORMALIZER_FILE} "
                                 f"and {CLASSIFIER_FILE}, got the file {p}")
            return [p]
        halves = [p / NORMALIZER_FILE, p / CLASSIFIER_FILE]
        present = [h.is_file() for h in halves]
        if split is not False and all(present):
            return halves
        if split:
            missing = [h.name for h, ok in zip(halves, present) if not ok]
            raise FileNotFoundError(f"split=True but {p} lacks {missing} (re-export the model set "
                                    "with norface_rt.export.save_model_set)")
        if any(present) and split is None:
            log.warning("%s holds only one of %s and %s (half-written model set?); using %s",
                        p, NORMALIZER_FILE, CLASSIFIER_FILE, ONNX_FILE)
        combined = p / ONNX_FILE
        if not combined.is_file():
            raise FileNotFoundError(f"ONNX model not found: {combined}")
        return [combined]

    @staticmethod
    def _check_io(sess: ort.InferenceSession, path: Path, inputs: Sequence[str],
                  outputs: Sequence[str]) -> None:
        ins = [i.name for i in sess.get_inputs()]
        outs = [o.name for o in sess.get_outputs()]
        if sorted(ins) != sorted(inputs) or sorted(outs) != sorted(outputs):
            raise ValueError(f"{path}: expected I/O {list(inputs)} -> {list(outputs)}, "
                             f"got {ins} -> {outs}")

    def _forward(self, x: np.ndarray) -> Outputs:
        return self._forward_timed(x)[0]

    def _forward_timed(self, x: np.ndarray) -> tuple[Outputs, dict[str, float]]:
        if self.session is not None:
            t0 = time.perf_counter()
            normalized, au_prob, au_int, emo = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
            return (normalized, au_prob, au_int, emo), {TIMING_INFER: time.perf_counter() - t0}
        assert self.normalizer_session is not None and self.classifier_session is not None
        t0 = time.perf_counter()
        (normalized,) = self.normalizer_session.run(list(NORMALIZER_OUTPUTS), {INPUT_NAME: x})
        t1 = time.perf_counter()
        au_prob, au_int, emo = self.classifier_session.run(
            list(CLASSIFIER_OUTPUTS), {NORMALIZED_NAME: normalized, INPUT_NAME: x})
        t2 = time.perf_counter()
        return (normalized, au_prob, au_int, emo), {TIMING_NORMALIZE: t1 - t0,
                                                    TIMING_CLASSIFY: t2 - t1}
