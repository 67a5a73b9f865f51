"""PyTorch backend: runs the model set's safetensors weights (reference path; CUDA + fp16 on GPU)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from norface_rt.backends.base import Backend, Outputs
from norface_rt.types import Stage, Timings


class TorchBackend(Backend):
    """``fp16`` defaults to True on CUDA (autocast: matmuls in fp16, softmax/norms in fp32) and must
    stay False on CPU, where fp16 is slower and less accurate.

    Normalizer and classifier run as two calls so each can be timed: ``"normalize"`` includes
    copying the input to the device, ``"classify"`` copying the results back; on CUDA the clock
    is read only after ``torch.cuda.synchronize`` (kernels run asynchronously)."""

    name = "torch"

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "cpu",
                 fp16: bool | None = None, num_threads: int | None = None) -> None:
        from norface_rt.weights import load_torch_model

        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} requested but this torch build has no usable CUDA "
                               f"(torch {torch.__version__})")
        self.fp16 = (dev.type == "cuda") if fp16 is None else fp16
        if self.fp16 and dev.type != "cuda":
            raise ValueError(f"fp16=True needs device='cuda', got {device!r}")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = dev
        self.model = load_torch_model(model_dir, device=dev)
        self.config = self.model.cfg

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "fp16": self.fp16}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        return self._forward_timed(x, geometry)[0]

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.fp16):
            self._sync()
            t0 = time.perf_counter()
            face = torch.from_numpy(x).to(self.device)
            normalized = self.model.normalize(face)
            self._sync()
            t1 = time.perf_counter()
            geo = None if geometry is None else torch.from_numpy(geometry).to(self.device)
            probs = self.model.classify(normalized, face, geo)
            au_prob, au_int, emo = (o.float().cpu().numpy() for o in probs)  # .cpu() syncs
            self._sync()
            t2 = time.perf_counter()
        return ((normalized.float().cpu().numpy(), au_prob, au_int, emo),
                {Stage.NORMALIZE: t1 - t0, Stage.CLASSIFY: t2 - t1})
