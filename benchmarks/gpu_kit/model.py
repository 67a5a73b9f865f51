"""The model alone on ``torch-cuda``: latency and faces/s per batch size, with and without CUDA
graphs, and next to each figure the max abs error against PyTorch fp32 on the CPU
(:mod:`norface_rt.reference`, the reference of ``norface-rt bench`` and the engine builder).

Inputs are real faces: every face of the kit's inputs aligned on the CPU as the pipeline does,
repeated up to the largest batch. Random crops would measure the same speed, but they drive
the MoE gates to near-ties where fp16 flips experts, and the error column would describe noise.

The backend gets its default buckets plus every requested batch above them (128, 256), so each
batch is one graph replay rather than chunks of 64. On the CPU (the dry run) the same code runs
in fp32 without graphs: the "cuda graphs" variant is then eager too, and says so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_kit.inputs import crops_and_geometry, load_inputs
from benchmarks.gpu_kit.measure import percentile
from benchmarks.gpu_kit.part import Part
from benchmarks.gpu_kit.settings import Settings

MIN_RUNS = 3


def run(settings: Settings, part: Part) -> None:
    import torch

    from norface_rt.backends import load_backend
    from norface_rt.backends.cuda_backend import DEFAULT_BUCKETS
    from norface_rt.model_set import load_config
    from norface_rt.reference import max_abs_errors, reference_outputs

    model_dir = Path(settings.model_dir)
    cfg = load_config(model_dir)
    inputs = load_inputs(settings.inputs, max_frames=settings.max_frames)
    n = max(settings.batches)
    crops, geometry = crops_and_geometry(inputs, cfg, n)
    t0 = time.perf_counter()
    ref = reference_outputs(model_dir, {n: crops}, {n: geometry})[n]
    buckets = sorted(set(DEFAULT_BUCKETS) | {b for b in settings.batches if b > max(DEFAULT_BUCKETS)})
    part.update(model={"model_id": cfg.model_id, "size": cfg.size, "img_size": cfg.img_size,
                       "model_dir": str(model_dir)},
                input=f"{min(n, len(inputs.faces()))} real faces of the kit's inputs, aligned on "
                      f"the CPU (repeated up to {n})",
                reference="PyTorch fp32 on the CPU (norface_rt.reference)",
                reference_s=round(time.perf_counter() - t0, 2), buckets=buckets,
                device=settings.device, fp16=settings.cuda, variants=[])
    for graphs in (True, False):
        use_graphs = graphs and settings.cuda
        t0 = time.perf_counter()
        backend = load_backend(model_dir, "torch-cuda", device=settings.device, fp16=settings.cuda,
                               buckets=buckets, use_graphs=use_graphs,
                               num_threads=settings.threads)
        variant: dict[str, Any] = {"variant": "cuda graphs" if graphs else "eager",
                                   "cuda_graphs": use_graphs, **backend.describe(),
                                   "load_s": round(time.perf_counter() - t0, 2)}
        if settings.cuda:
            torch.cuda.reset_peak_memory_stats(variant["device"])
        try:
            for b in settings.batches:
                x, g = crops[:b], None if geometry is None else geometry[:b]
                errors = max_abs_errors(backend.infer(x, geometry=g),
                                        {k: v[:b] for k, v in ref.items()})
                for _ in range(settings.warmup):
                    backend.infer(x, geometry=g)
                host: list[float] = []
                device: list[float] = []
                start = time.perf_counter()
                while len(host) < settings.repeats:
                    t = time.perf_counter()
                    out = backend.infer(x, geometry=g)
                    host.append(time.perf_counter() - t)
                    device.append(sum(out.timings.values()))
                    if len(host) >= MIN_RUNS and time.perf_counter() - start > settings.max_seconds:
                        break
                med = statistics.median(host)
                part.add_row({
                    "variant": variant["variant"], "cuda_graphs": use_graphs, "batch": b,
                    "runs": len(host), "median_ms": med * 1e3,
                    "p90_ms": percentile(host, 90) * 1e3,
                    "device_median_ms": statistics.median(device) * 1e3,
                    "faces_per_s": b / med, "max_abs_err": errors,
                })
        finally:
            if settings.cuda:
                variant["cuda_max_memory_allocated_mib"] = round(
                    torch.cuda.max_memory_allocated(variant["device"]) / 2**20, 1)
            backend.close()
            part.data["variants"].append(variant)
            part.save()
    part.update(status="ok")
