"""Optional extras: which feature needs which ``pip install 'norface-rt[EXTRA]'``.

The default path (ONNX Runtime on the CPU) needs none of them. Everything else is imported
lazily, at the point where the feature is used, and a missing package is reported by
:class:`MissingExtra` with the command that installs it, instead of a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util

# extra -> modules it provides (checked in this order)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "safetensors"),
    "export": ("torch", "safetensors", "onnx"),
    "tensorrt": ("tensorrt", "torch"),
    # norface_rt.to_dataframe (the Python API's table of results)
    "pandas": ("pandas",),
    # norface-rt plot (timelines of a run's emotions and AUs)
    "plot": ("matplotlib",),
    # Triton client (--backend triton) and the repository writer (norface-rt triton-repo).
    "triton": ("tritonclient", "grpc", "onnx"),
    # NATS JetStream results feed (--nats) and Prometheus metrics endpoint (--metrics-port).
    "nats": ("nats",),
    "metrics": ("prometheus_client",),
}

# TensorRT wheels come from NVIDIA's package index and need an NVIDIA driver.
TENSORRT_NOTE = ("TensorRT needs an NVIDIA GPU and driver; its wheels come from NVIDIA's index "
                 "(add --extra-index-url https://pypi.nvidia.com). See docs/gpu.md.")


# ONNX Runtime's CUDA build is another distribution (onnxruntime-gpu) of the same module: it
# replaces the CPU build (the default install's), which pip cannot do through an extra. Both at
# once overwrite each other's files, a combination ONNX Runtime documents as broken.
ORT_CUDA_COMMANDS = ('pip uninstall -y onnxruntime onnxruntime-gpu && '
                     'pip install "onnxruntime-gpu>=1.18"')


def onnxruntime_builds() -> list[str]:
    """The ONNX Runtime distributions installed here (``onnxruntime``, ``onnxruntime-gpu``)."""
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (plus how to get TensorRT for that extra)."""
    if extra not in EXTRA_MODULES:
        raise ValueError(f"extra must be one of {sorted(EXTRA_MODULES)}, got {extra!r}")
    hint = f"pip install 'norface-rt[{extra}]'"
    return f"{hint}. {TENSORRT_NOTE}" if extra == "tensorrt" else hint


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found, not imported: cheap)."""
    if extra not in EXTRA_MODULES:
        raise ValueError(f"extra must be one of {sorted(EXTRA_MODULES)}, got {extra!r}")
    return [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtra` naming ``purpose`` and the install command when a module of
    ``extra`` is missing; return quietly otherwise."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(f"{purpose} needs {', '.join(missing)} (not installed here): "
                           f"{install_hint(extra)}")
