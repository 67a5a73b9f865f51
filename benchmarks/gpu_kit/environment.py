"""What the figures were measured on: machine, GPU, driver, CUDA, torch and package versions.

``nvidia-smi`` and PyTorch's own environment report (``python -m torch.utils.collect_env``) are
kept verbatim in ``environment.txt``; the parsed fields go into the results. A machine without
a GPU says so in each field rather than leaving it out, so a dry run's report cannot be mistaken
for a GPU run's.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.gpu_kit import REPO

EXTRA_PACKAGES = ("opencv-python-headless", "opencv-contrib-python", "opencv-python", "onnx",
                  "safetensors", "msgpack", "pytest", "pytest-timeout")
SMI_QUERY = "name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit,pci.bus_id"
SMI_QUERY_MINIMAL = "name,driver_version,memory.total"


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except FileNotFoundError:
        return None, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return None, f"{' '.join(cmd)}: no answer within {timeout:.0f} s"
    return p.returncode, (p.stdout + p.stderr).strip()


def nvidia_smi(timeout: float = 30.0) -> dict[str, Any]:
    """``nvidia-smi``'s table and the queried fields of each GPU; ``found`` False without it."""
    if shutil.which("nvidia-smi") is None:
        return {"found": False, "text": "nvidia-smi: not found on PATH (no NVIDIA driver here)",
                "gpus": []}
    _, text = _run(["nvidia-smi"], timeout)
    for query in (SMI_QUERY, SMI_QUERY_MINIMAL):  # an older driver may not know every field
        rc, csv = _run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], timeout)
        if rc == 0:
            return {"found": True, "text": text, "gpus": gpus_from_csv(csv, query), "query": query}
    return {"found": True, "text": text, "gpus": [], "query_error": csv}


def gpus_from_csv(csv: str, query: str = SMI_QUERY) -> list[dict[str, str]]:
    """One dict per GPU from ``nvidia-smi --query-gpu=QUERY --format=csv,noheader``."""
    keys = query.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(","))))
            for line in csv.splitlines() if line.strip()]


def torch_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"index": i, "name": p.name,
                                    "capability": f"{p.major}.{p.minor}",
                                    "memory_gib": round(p.total_memory / 2**30, 1),
                                    "multiprocessors": p.multi_processor_count})
        info["driver_cuda"] = _driver_cuda_version()
    return info


def _driver_cuda_version() -> str | None:
    """The newest CUDA version the installed driver supports (``cuDriverGetVersion``)."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    v = ctypes.c_int()
    if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
        return None
    return f"{v.value // 1000}.{(v.value % 1000) // 10}"


def git_commit() -> dict[str, Any]:
    rc, head = _run(["git", "rev-parse", "HEAD"], 10.0)
    if rc != 0:
        return {"commit": None, "note": "not a git checkout here (a copy of the working tree)"}
    _, status = _run(["git", "status", "--porcelain", "--untracked-files=no"], 10.0)
    return {"commit": head, "modified_files": len(status.splitlines()) if status else 0}


def collect(out_dir: Path, collect_timeout: float = 15.0) -> dict[str, Any]:
    """The environment section; writes ``environment.txt`` (nvidia-smi and collect_env)."""
    from norface_rt.tools.bench import machine_info, versions

    vers: dict[str, str | None] = dict(versions())
    for pkg in EXTRA_PACKAGES:
        try:
            vers[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    smi = nvidia_smi()
    torch = torch_info()
    _, collect_env = _run([sys.executable, "-m", "torch.utils.collect_env"], collect_timeout)
    (out_dir / "environment.txt").write_text(
        "# nvidia-smi\n\n" + smi["text"] + "\n\n# python -m torch.utils.collect_env\n\n"
        + collect_env + "\n")
    gpu = smi["gpus"][0] if smi["gpus"] else {}
    return {
        "status": "ok",
        "machine": machine_info(),
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "versions": vers,
        "torch": torch,
        "nvidia_smi": {k: v for k, v in smi.items() if k != "text"},
        "gpu": (torch["devices"][0]["name"] if torch["devices"] else gpu.get("name"))
        or "none (no CUDA device visible to torch, nvidia-smi not found)",
        "driver": gpu.get("driver_version"),
        "git": git_commit(),
    }
