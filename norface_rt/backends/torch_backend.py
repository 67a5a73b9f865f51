"""PyTorch backend: runs the model set's safetensors weights (reference path; CUDA + fp16 on GPU)."""

from __future__ import annotations

import os

import numpy as np
import torch

from norface_rt.backends.base import Backend


class TorchBackend(Backend):
    """``fp16`` defaults to True on CUDA (autocast: matmuls in fp16, softmax/norms in fp32) and must
    stay False on CPU, where fp16 is slower and less accurate."""

    name = "torch"

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "cpu",
                 fp16: bool | None = None, num_threads: int | None = None) -> None:
        from norface_rt.export import load_torch_model

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

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        t = torch.from_numpy(x).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16,
                                                    enabled=self.fp16):
            outs = self.model(t)
        normalized, au_prob, au_int, emo = (o.float().cpu().numpy() for o in outs)
        return normalized, au_prob, au_int, emo
