"""The GPU verification kit: one command that checks and measures norface-rt's GPU paths in one
run of a few minutes, and writes every result to one folder.

Why it exists before any GPU does: a GPU may be lent for a quarter of an hour, on a machine with
a CUDA build of PyTorch but without PyAV, MediaPipe or pyzmq and without a network. The kit is
ready and tested (CI runs ``--device cpu --dry-run``, which takes every code path of a GPU run
except the CUDA calls), so that quarter of an hour goes to measuring.

What one run writes to ``--out`` (``results.json``, ``results.md``, ``environment.txt``,
``gpu-tests.xml``, ``gpu-tests.log``, ``kit.log``):

* environment: ``nvidia-smi``, GPU, driver, CUDA, torch and package versions (:mod:`.environment`);
* the GPU tests (``pytest -m "gpu or tensorrt"``: torch-cuda backend, device alignment, CUDA
  training step, TensorRT) and their outcomes (:mod:`.gpu_tests`);
* the model alone on ``torch-cuda`` at batch 1 to 256, with and without CUDA graphs: median
  latency, faces/s and the max abs error against PyTorch fp32 on the same real face crops
  (:mod:`.model`);
* end to end for 1, 8 and 32 concurrent streams: frames decoded beforehand and stored as JPEG,
  MediaPipe's landmarks replayed (:mod:`.inputs`), the faces aligned on the device, classified
  and published to an in-process sink: faces/s and p50 / p99 latency (:mod:`.end_to_end`).

Commands (from the repository root)::

    python -m benchmarks.gpu_kit --prepare            # once, here: inputs from ../shared
    python -m benchmarks.gpu_kit --out gpu-kit-out    # on the GPU machine
    python -m benchmarks.gpu_kit --device cpu --dry-run --out /tmp/kit   # CI, any machine
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_INPUTS = Path(__file__).resolve().parent / "prepared-inputs"
