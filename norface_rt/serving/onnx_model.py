"""Triton Python-backend model that runs one ONNX graph with ONNX Runtime (``--platform python``).

Copied as ``model.py`` next to ``model.onnx`` into each model of a repository written with
``norface-rt triton-repo --platform python``; it runs inside the Triton server's own Python
environment (numpy<2 and onnxruntime; ``norface-rt triton-server setup``), not the edge's, so it
imports neither norface_rt nor anything the server lacks. It is one generic runner for the
preprocess, normalizer and classifier graphs: every name and type comes from the model's
``config.pbtxt``, so the same file serves any model set.

The dynamic batcher hands over several requests at once: their inputs are concatenated into one
batch, run once, and the outputs cut back per request, in order.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """The entry point Triton's Python backend looks for."""

    def initialize(self, args: dict[str, str]) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        threads = int(params.get("intra_op_threads", "0") or 0)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Several model instances share the cores: a pool spinning after its run steals them.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"],
                            params.get("onnx_file", "model.onnx"))
        self.session = ort.InferenceSession(path, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"]))
                       for i in cfg["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in cfg["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds: dict[str, np.ndarray] = {}
        sizes: list[int] = []
        for name, dtype in self.inputs:
            parts = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=dtype)
            if not sizes:
                sizes = [p.shape[0] for p in parts]
        try:
            results = self.session.run([n for n, _ in self.outputs], feeds)
        except Exception as exc:  # one bad batch fails its requests, not the server
            err = pb_utils.TritonError(f"ONNX Runtime failed: {type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses = []
        start = 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(res[start:start + n], dtype=dt))
                       for (name, dt), res in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        self.session = None
