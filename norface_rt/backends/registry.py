"""The backend table: every fact about a backend name, in one read-only place.

Each row says where the backend's class lives (imported only when it is used, so the default
ONNX Runtime path never imports torch), which extra installs it, whether it runs a local model
set or a model on a server reached by URL, its natural device, how the run options ``device`` and
``threads`` become constructor options, and what else the runtime must know (it aligns faces on
its device; the CLI builds engines before loading it). Name lists, ``--backend`` choices and
option rules are all read from here; a new backend is one more row (the timm registry idea).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One backend: how to import, install, place and configure it."""

    name: str
    module: str  # the module defining ``cls`` (imported on first use)
    cls: str
    # The pip extra that installs it (None: part of the default install) and whether
    # load_backend checks it before importing (TensorRT's own import check says more: where
    # NVIDIA's wheels come from).
    extra: str | None
    check_extra: bool
    # True: the model runs on a server (connect_backend(url)); False: a local model set
    # (load_backend(model_dir)).
    remote: bool
    # The device it runs on when none is given (None: it takes no device option: a server uses
    # its own GPUs; "auto": the library picks, ONNX Runtime its CUDA build's GPU when installed).
    device: str | None
    # The constructor option that receives ``threads`` (None: it takes none).
    threads_option: str | None
    # fp16 exactly when the device is a GPU (on the CPU the same code runs fp32, without graphs).
    fp16_on_gpu: bool = False
    # It warps faces itself from the frame and the image->crop matrices (--device-align).
    aligns_on_device: bool = False
    # Its engines are compiled from the model set before it loads (norface-rt build-engines).
    builds_engines: bool = False

    def options(self, device: str | None = None, threads: int | None = None) -> dict[str, Any]:
        """Constructor options for a device (None: the natural one) and a thread count (None:
        the library's choice)."""
        kw: dict[str, Any] = {}
        if self.device is not None:
            kw["device"] = device or self.device
            if self.fp16_on_gpu:
                kw["fp16"] = str(kw["device"]).startswith("cuda")
        if threads and self.threads_option is not None:
            kw[self.threads_option] = threads
        return kw

    @property
    def purpose(self) -> str:
        """How errors about a missing extra name this backend."""
        return f"--backend {self.name}" if self.remote else f"the {self.name} backend"


BACKENDS: Mapping[str, BackendSpec] = MappingProxyType({s.name: s for s in (
    BackendSpec("onnxruntime", "norface_rt.backends.onnx_backend", "OrtBackend", extra=None,
                check_extra=False, remote=False, device="auto", threads_option="intra_op_threads"),
    BackendSpec("torch", "norface_rt.backends.torch_backend", "TorchBackend", extra="torch",
                check_extra=True, remote=False, device="cpu", threads_option="num_threads"),
    BackendSpec("tensorrt", "norface_rt.backends.tensorrt", "TrtBackend", extra="tensorrt",
                check_extra=False, remote=False, device="cuda", threads_option=None,
                builds_engines=True),
    BackendSpec("torch-cuda", "norface_rt.backends.cuda_backend", "CudaGraphBackend",
                extra="torch", check_extra=True, remote=False, device="cuda",
                threads_option="num_threads", fp16_on_gpu=True, aligns_on_device=True),
    BackendSpec("triton", "norface_rt.backends.triton_backend", "TritonBackend", extra="triton",
                check_extra=True, remote=True, device=None, threads_option=None),
)})

BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
# What runs when nobody chooses: ONNX Runtime on the CPU, the default install's path.
DEFAULT_BACKEND = "onnxruntime"
# Backends that run a local model set (what `norface-rt bench` measures) and those that run the
# model on a server (benchmarks/test_triton_bench.py measures Triton).
LOCAL_BACKENDS: tuple[str, ...] = tuple(n for n, s in BACKENDS.items() if not s.remote)
REMOTE_BACKENDS: tuple[str, ...] = tuple(n for n, s in BACKENDS.items() if s.remote)


def backend_spec(name: str) -> BackendSpec:
    """The row of ``name``; an unknown name is a ValueError listing the table's keys."""
    spec = BACKENDS.get(name)
    if spec is None:
        raise ValueError(f"name must be one of {list(BACKENDS)}, got {name!r}")
    return spec
