"""ONNX Runtime backend: the default runtime, on the CPU, or on a GPU with ONNX Runtime's CUDA build.

``device``: ``cpu``; ``cuda`` or ``cuda:N`` (CUDA execution provider on GPU N, CPU as fallback for
operators it lacks), which needs the CUDA build (``onnxruntime-gpu``) installed *instead of* the
CPU build (:data:`norface_rt.extras.ORT_CUDA_COMMANDS`); ``auto`` or None, the CUDA build's GPU 0
when it is installed, else the CPU.

It runs a model set's two graphs (:mod:`norface_rt.model_set`) in sequence, one session each, so
it can report how long normalization and classification take. A model set written before v0.2
that only holds the joined graph ``norface.onnx`` still loads and reports one ``infer`` timing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from norface_rt.backends.base import Backend, Outputs
from norface_rt.config import ModelConfig
from norface_rt.model_set import (
    CONFIG_FILE,
    GEOMETRY_NAME,
    INPUT_NAME,
    LEGACY_COMBINED,
    NORMALIZED_NAME,
    NORMALIZER,
    OUTPUT_NAMES,
    PROBABILITY_NAMES,
    GraphSpec,
    ModelSetError,
    classifier_spec,
    config_diff,
    config_from_metadata,
    graph_files,
    spec_for,
)
from norface_rt.types import Stage, Timings


def default_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu is installed, CPU always as the fallback."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


def providers_for(device: str | None) -> list[Any]:
    """ONNX Runtime's providers for a ``--device`` value (see the module doc); a CUDA device
    without the CUDA build is a ValueError giving the commands that install it."""
    if device is None or device == "auto":
        return list(default_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    m = _CUDA_DEVICE.fullmatch(device)
    if m is None:
        raise ValueError(f"--device: expected cpu, cuda or cuda:N for the onnxruntime backend, "
                         f"got {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        from norface_rt.extras import ORT_CUDA_COMMANDS, onnxruntime_builds

        builds = onnxruntime_builds()
        both = " (both its CPU and CUDA builds are installed, which ONNX Runtime documents as " \
               "broken)" if len(builds) == 2 else ""
        raise ValueError(f"--device {device}: this ONNX Runtime has no CUDAExecutionProvider"
                         f"{both}; its CUDA build replaces the CPU build: {ORT_CUDA_COMMANDS} "
                         "(README, \"GPU\"), or run on the CPU (--device cpu)")
    return [("CUDAExecutionProvider", {"device_id": int(m.group(1) or 0)}),
            "CPUExecutionProvider"]


class OrtBackend(Backend):
    """Runs a model set's ONNX graphs; the config comes from the ONNX metadata, never the caller.

    ``model`` is a model-set directory or one combined ``.onnx`` file (a model set before v0.2).
    Every graph loaded, and a ``config.json`` beside them, must carry the same config (a mismatch
    means a half-updated model set and is an error). ``intra_op_threads`` None lets ORT pick (all
    cores); set it when sharing the CPU with decoding and face detection.
    """

    name = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str], providers: Sequence[Any] | None = None,
                 intra_op_threads: int | None = None, device: str | None = None) -> None:
        p = Path(model)
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = ORT default), got {intra_op_threads}")
        if p.is_dir():
            paths = graph_files(p)
        elif p.is_file():
            paths = [p]
        else:
            raise FileNotFoundError(f"ONNX model not found: {p}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads is not None:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        if providers is not None and device not in (None, "auto"):
            raise ValueError(f"give providers or device, not both (got {list(providers)} and "
                             f"{device!r})")
        chosen = list(providers) if providers is not None else providers_for(device)
        unknown = [pr for pr in (c[0] if isinstance(c, tuple) else c for c in chosen)
                   if pr not in ort.get_available_providers()]
        if unknown:
            raise ValueError(
                f"providers: {unknown} not available; this onnxruntime offers {ort.get_available_providers()}"
            )
        if len(paths) == 2:
            # Each session owns an intra-op pool; a pool spinning after its run would steal the
            # cores the next session's run needs (measured: ~15-25 % slower at batch 8, 2 cores).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = [self._session(f, opts, chosen) for f in paths]
        configs = []
        for sess, f in zip(sessions, paths):
            try:
                configs.append(config_from_metadata(sess.get_modelmeta().custom_metadata_map,
                                                    str(f)))
            except ValueError as exc:
                raise ModelSetError(str(exc)) from exc
        for f, c in zip(paths[1:], configs[1:]):
            if c != configs[0]:
                raise ModelSetError(f"{f} disagrees with the config embedded in {paths[0]} in "
                                    f"fields {config_diff(configs[0], c)}")
        self.config: ModelConfig = configs[0]
        self.onnx_paths: list[Path] = paths
        self.split = len(paths) == 2
        cfg_json = paths[0].parent / CONFIG_FILE
        if cfg_json.is_file():
            on_disk = ModelConfig.load(cfg_json)
            if on_disk != self.config:
                raise ModelSetError(f"{cfg_json} disagrees with the config embedded in "
                                    f"{paths[0]} in fields {config_diff(on_disk, self.config)}")
        specs = [NORMALIZER, classifier_spec(self.config)] if self.split else [LEGACY_COMBINED]
        if not self.split and self.config.geometry_dim:
            raise ValueError(f"{paths[0]}: a model with geometry inputs has no joined graph "
                             f"({LEGACY_COMBINED.file}); load its model-set directory")
        if not self.split and spec_for(paths[0]) is not LEGACY_COMBINED:
            raise ValueError(f"{paths[0]}: a single graph must be a combined model "
                             f"({LEGACY_COMBINED.file}); run the normalizer and classifier "
                             "from their model-set directory instead")
        for sess, path, spec in zip(sessions, paths, specs):
            self._check_io(sess, path, spec)
            self._check_shapes(sess, path, self.config)
        self._sessions = sessions
        self.providers: list[str] = sessions[0].get_providers()
        self.device = "cpu"
        if self.providers[0] == "CUDAExecutionProvider":
            opt = sessions[0].get_provider_options().get("CUDAExecutionProvider", {})
            self.device = f"cuda:{opt.get('device_id', 0)}"

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "providers": list(self.providers), "split": self.split}

    @staticmethod
    def _session(path: Path, opts: ort.SessionOptions, providers: list[str]
                 ) -> ort.InferenceSession:
        """One graph; a file ONNX Runtime cannot load (garbage, truncated, wrong opset...) is a
        :class:`ModelSetError` naming it, not the runtime's own exception type."""
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT's error classes derive from Exception only
            raise ModelSetError(f"{path}: ONNX Runtime cannot load this graph (file damaged or "
                                f"not an ONNX model?): {str(exc).strip()[:300]}") from exc

    @staticmethod
    def _check_shapes(sess: ort.InferenceSession, path: Path, cfg: ModelConfig) -> None:
        """Every fixed dimension of the graph's inputs and outputs agrees with the config (a
        config edited after export, or a graph from another model, is refused at load rather
        than failing on the first face)."""
        image = ["B", cfg.in_chans, cfg.img_size, cfg.img_size]
        expected: dict[str, list[Any]] = {INPUT_NAME: image, NORMALIZED_NAME: image,
                                          GEOMETRY_NAME: ["B", cfg.geometry_dim]}
        n_au, n_emo = len(cfg.au_names), len(cfg.emotion_names)
        expected.update(zip(PROBABILITY_NAMES, (["B", n_au], ["B", n_au], ["B", n_emo])))
        for arg in (*sess.get_inputs(), *sess.get_outputs()):
            want = expected.get(arg.name)
            if want is None:
                continue
            got = list(arg.shape)
            fixed_ok = len(got) == len(want) and all(
                not isinstance(g, int) or not isinstance(w, int) or g == w
                for g, w in zip(got, want))
            if not fixed_ok:
                raise ModelSetError(f"{path}: {arg.name!r} has shape {got}, but the model config "
                                    f"says {want} (img_size={cfg.img_size}, in_chans="
                                    f"{cfg.in_chans}, {n_au} AUs, {n_emo} emotions)")

    @staticmethod
    def _check_io(sess: ort.InferenceSession, path: Path, spec: GraphSpec) -> None:
        ins = [i.name for i in sess.get_inputs()]
        outs = [o.name for o in sess.get_outputs()]
        if sorted(ins) != sorted(spec.inputs) or sorted(outs) != sorted(spec.outputs):
            raise ModelSetError(f"{path}: expected I/O {list(spec.inputs)} -> {list(spec.outputs)}, "
                             f"got {ins} -> {outs}")

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        return self._forward_timed(x, geometry)[0]

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        if not self.split:
            t0 = time.perf_counter()
            normalized, au_prob, au_int, emo = self._sessions[0].run(list(OUTPUT_NAMES),
                                                                     {INPUT_NAME: x})
            return (normalized, au_prob, au_int, emo), {Stage.INFER: time.perf_counter() - t0}
        normalizer, classifier = self._sessions
        t0 = time.perf_counter()
        (normalized,) = normalizer.run(list(NORMALIZER.outputs), {INPUT_NAME: x})
        t1 = time.perf_counter()
        feeds = {NORMALIZED_NAME: normalized, INPUT_NAME: x}
        if geometry is not None:
            feeds[GEOMETRY_NAME] = geometry
        au_prob, au_int, emo = classifier.run(list(classifier_spec(self.config).outputs), feeds)
        t2 = time.perf_counter()
        return (normalized, au_prob, au_int, emo), {Stage.NORMALIZE: t1 - t0,
                                                    Stage.CLASSIFY: t2 - t1}
