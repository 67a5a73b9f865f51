"""Model benchmark: speed, memory and numeric error of each inference backend on one model set.

Why numeric error sits next to every speed figure: a faster backend (fp16, TensorRT, a different
ORT optimisation level) is only worth having if it still computes the same model, so each row says
how far its ``au_prob`` / ``au_intensity`` / ``emotion_prob`` are from the PyTorch fp32 reference
(:mod:`norface_rt.reference`, shared with the TensorRT engine builder) on exactly the same crops.

Why each backend runs in its own spawned process: the RSS high-water mark (``ru_maxrss``,
``VmHWM``) never goes down, so measuring backends one after another in one process would hide the
second one's memory under the first one's peak. A child per backend also bounds every run with a
timeout (a hung backend is killed, not waited for).

Inputs are seeded uniform-noise crops: speed does not depend on pixel content, and the numeric
comparison only needs both sides to see the same input.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.backends.registry import DEFAULT_BACKEND, LOCAL_BACKENDS, backend_spec
from norface_rt.flags import nonneg_float, option, positive_int
from norface_rt.reference import make_crops, make_geometry, max_abs_errors, reference_outputs

MIN_RUNS = 3
VERSION_PACKAGES: tuple[str, ...] = ("numpy", "onnxruntime", "torch", "mediapipe", "av")


@dataclass
class BenchOptions:
    """What to measure (the ``norface-rt bench`` options; its parser is generated from these
    fields). ``max_seconds`` caps the time per (backend, batch): large batches on a 2-core CPU
    would otherwise take minutes for ``repeats`` runs; the runs actually done are reported."""

    model_dir: Path
    backends: list[str] = option(
        flag="--backend", default_factory=lambda: [DEFAULT_BACKEND], nargs="+",
        choices=LOCAL_BACKENDS, metavar="NAME",
        help="backends to measure: onnxruntime (default), torch, tensorrt, torch-cuda (fp16 + "
             "CUDA graphs)")
    device: str = option("cpu", flag="--device", help="torch backend device (cpu, cuda)")
    threads: int | None = option(
        None, flag="--threads", parse=positive_int,
        help="ONNX Runtime intra-op / torch threads (default: the library's choice)")
    batches: list[int] = option(
        flag="--batches", default_factory=lambda: [1, 8, 32, 128], nargs="+", parse=positive_int,
        metavar="N", help="batch sizes (1 = latency)")
    repeats: int = option(
        30, flag="--repeats", parse=positive_int,
        help="timed runs per batch size after warm-up (default %(default)s)")
    warmup: int = option(
        3, flag="--warmup", parse=int, help="untimed runs per batch size first (default %(default)s)")
    # per (backend, batch) measurement; stops early after MIN_RUNS runs
    max_seconds: float = option(
        15.0, flag="--max-seconds", parse=nonneg_float,
        help="stop a batch size's timed runs after S seconds (at least 3 runs)")
    timeout: float = option(  # per backend child process
        600.0, flag="--timeout", parse=nonneg_float,
        help="kill a backend's benchmark process after S seconds")
    seed: int = option(0, flag="--seed", parse=int, help="seed of the random input faces")

    def validate(self) -> None:
        for name, v, lo in (("repeats", self.repeats, 1), ("warmup", self.warmup, 0)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not self.batches or any(not isinstance(b, int) or b < 1 for b in self.batches):
            raise ValueError(f"batches must be a non-empty list of integers >= 1, got {self.batches!r}")
        if not self.backends:
            raise ValueError("backends must name at least one backend, got []")
        from norface_rt.backends.registry import LOCAL_BACKENDS

        bad = [b for b in self.backends if b not in LOCAL_BACKENDS]
        if bad:
            raise ValueError(f"backends must be among {list(LOCAL_BACKENDS)}, got {bad}")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark. Linux: ``VmHWM``, because ``ru_maxrss`` survives
    ``execve`` -- a spawned child would report its (large, torch-loaded) parent's peak as its own.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    hwm = _proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _current_rss_mb() -> float:
    cur = _proc_status_mb("VmRSS")
    return cur if cur is not None else _peak_rss_mb()


def _device_for(name: str, device: str) -> str | None:
    """``--device`` is the device of backends that take one (their row of the backend table
    names a natural device); those whose natural device is a GPU take it only when it names a GPU
    (else their default, cuda: without CUDA they report themselves as "not available" instead of
    quietly measuring the CPU); a backend without a device option (ONNX Runtime) picks its own
    providers."""
    natural = backend_spec(name).device
    if natural is None or (natural.startswith("cuda") and not device.startswith("cuda")):
        return None
    return device


def measure_backend(model_dir: str, name: str, batches: Sequence[int], repeats: int, warmup: int,
                    max_seconds: float, device: str, threads: int | None, seed: int,
                    refs: dict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Load one backend and time it at each batch size (runs in the child process)."""
    from norface_rt.pipeline.factory import open_backend

    rss0 = _current_rss_mb()
    try:
        backend = open_backend(model_dir, name, device=_device_for(name, device), threads=threads)
    except Exception as exc:  # any load failure is a property of this machine, reported as such
        return {"backend": name, "status": f"not available: {exc}", "rows": []}
    info = backend.describe()
    on_gpu = str(info.get("device") or "").startswith("cuda")
    # torch.cuda's own memory counters apply to the backends that run on PyTorch
    cuda = backend_spec(name).extra == "torch" and on_gpu
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(info["device"])
    rows: list[dict[str, Any]] = []
    try:
        for b in batches:
            crops = make_crops(b, backend.config.img_size, seed)
            geo = make_geometry(b, backend.config, seed)
            first = backend.infer(crops, geometry=geo)
            errors = max_abs_errors(first, refs[b])
            for _ in range(max(0, warmup - 1)):
                backend.infer(crops, geometry=geo)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < repeats:
                t0 = time.perf_counter()
                backend.infer(crops, geometry=geo)
                times.append(time.perf_counter() - t0)
                if len(times) >= MIN_RUNS and time.perf_counter() - start > max_seconds:
                    break
            med = statistics.median(times)
            rows.append({
                "batch": b, "runs": len(times),
                "median_ms": med * 1e3,
                "p95_ms": float(np.percentile(times, 95)) * 1e3,
                "faces_per_s": b / med,
                "max_abs_err": errors,
                "max_abs_err_all": max(errors.values()),
            })
    finally:
        backend.close()
    res: dict[str, Any] = {
        "backend": name, "status": "ok", "rows": rows, "device": None, **info,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_delta_mb": _peak_rss_mb() - rss0,
        "rss_before_load_mb": rss0,
    }
    if cuda:
        import torch

        res["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(info["device"]) / 2**20
    return res


def _child(conn: Any, kwargs: dict[str, Any]) -> None:
    try:
        res = measure_backend(**kwargs)
    except Exception as exc:
        res = {"backend": kwargs["name"], "status": f"error: {type(exc).__name__}: {exc}",
               "rows": [], "traceback": traceback.format_exc()}
    conn.send(res)
    conn.close()


def run_isolated(timeout: float, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure_backend` in a fresh spawned process, killed after ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, kwargs), daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(timeout):
            try:
                result: dict[str, Any] = recv.recv()
                return result
            except EOFError:
                pass
        else:
            return {"backend": kwargs["name"], "status": f"error: timed out after {timeout:.0f} s",
                    "rows": []}
        proc.join(5.0)
        return {"backend": kwargs["name"], "rows": [],
                "status": f"error: benchmark process died (exit code {proc.exitcode})"}
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 2**20
                break
    except (OSError, ValueError, IndexError):
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_usable": usable,
            "ram_gb": round(ram_gb, 1) if ram_gb is not None else None,
            "platform": platform.platform(), "loadavg_at_start": load}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        from norface_rt import __version__

        out["norface_rt"] = __version__
    except ImportError:
        out["norface_rt"] = None
    return out


def run_bench(opts: BenchOptions, prepare: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Measure every requested backend; returns the report (see :func:`write_report`).
    ``prepare(model_dir)`` runs first (the CLI builds TensorRT engines there)."""
    from norface_rt.model_set import load_config

    opts.validate()
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    cfg = load_config(opts.model_dir)
    if prepare is not None:
        prepare(Path(opts.model_dir))
    batches = sorted(set(opts.batches))
    crops = {b: make_crops(b, cfg.img_size, opts.seed) for b in batches}
    refs = reference_outputs(opts.model_dir, crops,
                             {b: make_geometry(b, cfg, opts.seed) for b in batches})
    del crops
    results = []
    for name in opts.backends:
        results.append(run_isolated(
            opts.timeout, model_dir=str(opts.model_dir), name=name, batches=batches,
            repeats=opts.repeats, warmup=opts.warmup, max_seconds=opts.max_seconds,
            device=opts.device, threads=opts.threads, seed=opts.seed, refs=refs))
    return {
        "date": started,
        "command": " ".join(["norface-rt", *sys.argv[1:]]) if sys.argv else None,
        "machine": machine_info(),
        "versions": versions(),
        "model": {"model_id": cfg.model_id, "size": cfg.size, "trained": cfg.trained,
                  "img_size": cfg.img_size, "model_dir": str(opts.model_dir)},
        "settings": {"batches": batches, "repeats": opts.repeats, "warmup": opts.warmup,
                     "max_seconds": opts.max_seconds, "device": opts.device,
                     "threads": opts.threads, "seed": opts.seed,
                     "reference": "PyTorch fp32 on CPU (norface_rt.reference)",
                     "input": "seeded uniform-noise uint8 crops"},
        "backends": results,
    }


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        "| backend | batch | runs | median ms | p95 ms | faces/s | max abs err au_prob "
        "| au_intensity | emotion_prob | peak RSS delta MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["backends"]:
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | - | - | - | - | - | {r['status']} | | | |")
            continue
        mem = f"{r['peak_rss_delta_mb']:.0f}"
        if "cuda_max_memory_allocated_mb" in r:
            mem += f" (CUDA {r['cuda_max_memory_allocated_mb']:.0f})"
        for row in r["rows"]:
            e = row["max_abs_err"]
            lines.append(
                f"| {r['backend']} | {row['batch']} | {row['runs']} | {row['median_ms']:.2f} "
                f"| {row['p95_ms']:.2f} | {row['faces_per_s']:.1f} | {e['au_prob']:.1e} "
                f"| {e['au_intensity']:.1e} | {e['emotion_prob']:.1e} | {mem} |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    m, v, mod = report["machine"], report["versions"], report["model"]
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    missing = [k for k, val in v.items() if val is None]
    return "\n".join([
        "# norface-rt model benchmark",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), "
        f"{m['ram_gb']} GB RAM, load average at start {m['loadavg_at_start']}",
        f"- versions: {vers}" + (f" (not installed: {', '.join(missing)})" if missing else ""),
        f"- model: {mod['model_id']} (size {mod['size']}, {mod['img_size']} px, "
        f"trained={mod['trained']})",
        f"- reference for the error columns: {report['settings']['reference']}; "
        f"input: {report['settings']['input']}",
        "- batch 1 = latency; larger batches = throughput (faces/s from the median). "
        "Peak RSS delta = the process's RSS high-water mark (VmHWM; ru_maxrss off Linux) at the end of "
        "its runs minus its RSS before loading the backend (library import included); one fresh "
        "process per backend.",
        "",
        markdown_table(report),
        "",
    ])


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, md = out / "bench.json", out / "bench.md"
    j.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(render_markdown(report))
    return j, md


def bench_untrained(size: str, opts: BenchOptions,
                    prepare: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Benchmark a freshly initialised untrained model of ``size`` (created in a temp dir)."""
    from norface_rt.export import init_untrained

    with tempfile.TemporaryDirectory(prefix=f"norface-bench-{size}-") as tmp:
        opts.model_dir = Path(init_untrained(Path(tmp) / "model", size=size, seed=opts.seed))
        report = run_bench(opts, prepare)
    report["model"]["model_dir"] = f"(temporary, norface_rt.export.init_untrained size={size!r})"
    return report
