"""CUDA fallback backend: PyTorch fp16 with CUDA graphs over fixed batch buckets.

Why this exists next to ONNX Runtime / TensorRT: it needs nothing but a CUDA build of torch and
the model set's safetensors, and at the small batches of live analysis (1-8 faces) most of an eager
PyTorch forward is CPU-side kernel launch overhead. A CUDA graph replays the whole launch sequence
with one call, which removes that overhead; graphs need static shapes and addresses, hence:

* **Buckets.** A batch of N faces is padded with zero rows up to the smallest bucket >= N (results
  are sliced back to N); N above the largest bucket runs in chunks of the largest bucket plus one
  padded remainder. Rows never interact (LayerNorm is per token, BatchNorm uses running stats in
  eval, the MoE routes each row by its own gate logits with noise off in eval, attention is within
  one face), so padding and chunking do not change any row's result; the CPU tests check this.
* **Static buffers.** Each bucket owns its input tensor; its graphs read from it and leave their
  outputs in tensors allocated during capture. Normalizer and classifier are captured as two
  separate graphs so ``ModelOutput.timings`` keeps its ``"normalize"`` / ``"classify"`` split.
  A bucket's two graphs share one memory pool (captured and always replayed in that order);
  every run copies a bucket's outputs away before the next replay, so outputs are never read
  after being overwritten.
* **fp16.** Encoders, Expression Merging Module and decoder run in ``.half()`` (no per-replay weight
  casts as autocast would record in the graph; LayerNorm and SDPA softmax accumulate in fp32 inside
  their CUDA kernels). The classifier's MoE blocks, head LayerNorm and heads stay fp32. Why, as
  measured with CPU fp16 emulation on untrained small models (blurred-noise crops; the GPU tests
  re-check on CUDA): top-k routing is discontinuous, and a row whose expert choice flips moves by
  up to 0.06 in AU probability and 0.33 in intensity. On 64 crops autocast flipped 3 rows, full
  ``.half()`` 1; on 256 crops full ``.half()`` 6, fp16 encoders with the fp32 tail 3. On rows whose
  routing agreed, the fp32 tail also cut the error from 4e-4 / 3.9e-3 to 2e-4 / 1.0e-3 (AU prob /
  intensity). The tail is a few (B, d) GEMMs, negligible next to the encoders. Rows whose fp32
  routing is a near-tie can still flip under any rounding change (another backend's included).

On CPU (``device="cpu"``, ``fp16=False``) exactly the same bucket / padding / static-buffer code
runs eagerly (``use_graphs`` must be off), which is what the CPU tests exercise; timings there use
``perf_counter``, on CUDA CUDA events (kernels run asynchronously, host clocks would measure
launch time).

Not thread-safe: one inference thread per backend (the pipeline has exactly one).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from norface_rt.backends.base import Backend, ModelOutput, Outputs
from norface_rt.backends.batching import plan_chunks
from norface_rt.backends.gpu_preprocess import TorchAligner
from norface_rt.models.norface import NorfaceModel
from norface_rt.preprocess import denormalize, preprocess, validate_crops, validate_geometry
from norface_rt.types import Stage, Timings

DEFAULT_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
# Eager iterations on a side stream before capture: lets cuBLAS/cuDNN pick and cache their
# algorithms and workspaces, which must not be allocated for the first time inside a capture.
WARMUP_ITERS = 3

Probs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Mark = torch.cuda.Event | float


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """Validated bucket sizes in ascending order. Unsorted input is sorted (the order carries no
    meaning); empty lists, non-integers, sizes < 1 and duplicates are rejected (a duplicate is
    most likely a typo for another size)."""
    try:
        items = list(buckets)
    except TypeError:
        raise ValueError(f"buckets: expected a sequence of ints >= 1, got {buckets!r}") from None
    if not items:
        raise ValueError("buckets: expected at least one batch size, got an empty sequence")
    bad = [b for b in items if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1]
    if bad:
        raise ValueError(f"buckets: expected ints >= 1, got {bad} in {items}")
    sizes = [int(b) for b in items]
    dups = sorted({b for b in sizes if sizes.count(b) > 1})
    if dups:
        raise ValueError(f"buckets: expected distinct sizes, got duplicates {dups} in {sizes}")
    return tuple(sorted(sizes))


@dataclass(eq=False)
class _Bucket:
    """One batch size: its static input and, after the first run or capture, its outputs."""

    size: int
    face: torch.Tensor  # (size, C, S, S), compute dtype, on the device
    geometry: torch.Tensor | None = None  # (size, G) float32, for models with a geometry input
    normalized: torch.Tensor | None = None
    probs: Probs | None = None
    normalize_graph: torch.cuda.CUDAGraph | None = None
    classify_graph: torch.cuda.CUDAGraph | None = None


class _Clock:
    """Stage boundaries: CUDA events on the current stream (device time), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Mark:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    @staticmethod
    def seconds(a: Mark, b: Mark) -> float:
        """Time from mark ``a`` to mark ``b``; for events, ``b`` must have completed."""
        if isinstance(a, float) and isinstance(b, float):
            return b - a
        assert isinstance(a, torch.cuda.Event) and isinstance(b, torch.cuda.Event)
        return float(a.elapsed_time(b)) / 1e3


def _fp32_routing(model: NorfaceModel) -> None:
    """After ``model.half()``: return the classifier's MoE blocks, head norm and heads to fp32 and
    cast the (fp16) pooled features entering the first MoEs to fp32 (see module docstring)."""
    c = model.classifier
    tail = [c.moe_normalized, c.moe_original, c.moe_output, c.head_norm, c.au_head,
            c.intensity_head, c.emotion_head]
    if model.cfg.geometry_dim:  # the geometry branch is a few small GEMMs: all of it in fp32
        tail += [c.geometry_expert, c.moe_geometry, c.geometry_norm, c.emotion_head_geometry]
    for mod in tail:
        mod.float()

    def to_fp32(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(a.float() for a in args)

    c.moe_normalized.register_forward_pre_hook(to_fp32)
    c.moe_original.register_forward_pre_hook(to_fp32)


class CudaGraphBackend(Backend):
    """PyTorch backend with batch buckets, static buffers and (on CUDA) one CUDA graph per
    bucket and stage; see the module docstring for why each piece exists.

    ``use_graphs=None`` means graphs on CUDA and eager on CPU; ``use_graphs=False`` on CUDA runs
    the same buffers eagerly (the reference the graph tests compare replays against). All graphs
    are captured in the constructor (``capture_seconds`` says how long that took), so the first
    ``infer`` is as fast as any other.
    """

    name = "torch-cuda"
    aligns_on_device = True

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "cuda", fp16: bool = True,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, use_graphs: bool | None = None, *,
                 num_threads: int | None = None) -> None:
        from norface_rt.weights import load_torch_model

        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r} ({e})") from e
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {device!r}")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                build = ("a CPU-only build" if torch.version.cuda is None
                         else f"built for CUDA {torch.version.cuda}, but no usable GPU/driver")
                raise RuntimeError(f"device={device!r} requested but torch {torch.__version__} has "
                                   f"no CUDA ({build}); use device='cpu' with fp16=False, or the "
                                   "'torch' / 'onnxruntime' backend")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(f"device: {device!r} does not exist, this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s)")
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
        if not isinstance(fp16, bool):
            raise ValueError(f"fp16: expected True or False, got {fp16!r}")
        if fp16 and dev.type != "cuda":
            raise ValueError(f"fp16=True needs a CUDA device, got device={device!r}; "
                             "pass fp16=False on CPU")
        if use_graphs is None:
            use_graphs = dev.type == "cuda"
        if use_graphs and dev.type != "cuda":
            raise ValueError(f"use_graphs=True needs a CUDA device, got device={device!r}")
        self.buckets = check_buckets(buckets)
        self.model_dir = Path(model_dir)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = dev
        self.fp16 = fp16
        self.use_graphs = bool(use_graphs)
        self.dtype = torch.float16 if fp16 else torch.float32
        model = load_torch_model(model_dir, device=dev)
        training = sorted(n for n, m in model.named_modules() if m.training)
        if training:  # the MoE adds gate noise in training mode: rows would not be reproducible
            raise RuntimeError(f"load_torch_model returned modules in training mode: {training[:5]}")
        if fp16:
            model.half()
            _fp32_routing(model)
        self.model = model
        self.config = model.cfg
        cfg = self.config
        self._clock = _Clock(dev)
        self._aligner: TorchAligner | None = None
        self._closed = False
        shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
        g = cfg.geometry_dim
        self._buckets = [_Bucket(b, torch.zeros((b, *shape), dtype=self.dtype, device=dev),
                                 torch.zeros((b, g), dtype=torch.float32, device=dev) if g else None)
                         for b in self.buckets]
        t0 = time.perf_counter()
        if self.use_graphs:
            self._capture_all()
        self.capture_seconds = time.perf_counter() - t0

    # -- capture -------------------------------------------------------------------------------

    def _eager(self, b: _Bucket) -> None:
        b.normalized = self.model.normalize(b.face)
        b.probs = self.model.classify(b.normalized, b.face, b.geometry)

    def _capture_all(self) -> None:
        """Warm up every bucket on a side stream, then capture its two graphs on that same stream
        (PyTorch's whole-network capture recipe; one stream for warm-up and capture so library
        handles and workspaces created during warm-up are the ones the capture uses)."""
        with torch.no_grad(), torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for b in self._buckets:
                    for _ in range(WARMUP_ITERS):
                        self._eager(b)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            for b in self._buckets:
                b.normalized = b.probs = None  # warm-up outputs go back to the ordinary allocator
                g_norm = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g_norm, stream=side):
                    normalized = self.model.normalize(b.face)
                # Same pool as its normalizer: replayed right after it, and its input
                # (``normalized``) stays alive, so the classifier's scratch never aliases it.
                g_cls = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g_cls, pool=g_norm.pool(), stream=side):
                    probs = self.model.classify(normalized, b.face, b.geometry)
                b.normalized, b.probs = normalized, probs
                b.normalize_graph, b.classify_graph = g_norm, g_cls
            torch.cuda.synchronize()

    # -- running -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    def _run(self, x: torch.Tensor, geometry: torch.Tensor | None, want_normalized: bool
             ) -> tuple[torch.Tensor | None, Probs, Timings]:
        """x (N >= 1, C, S, S) float on any device [, geometry (N, G)] -> (normalized or None,
        probs) on the CPU as float32, plus stage timings. Input upload counts as "normalize",
        result download as "classify" (as in TorchBackend)."""
        self._check_open()
        n = int(x.shape[0])
        clock = self._clock
        normalized_parts: list[torch.Tensor] = []
        prob_parts: list[list[torch.Tensor]] = [[], [], []]
        marks: list[tuple[Mark, Mark, Mark]] = []
        on_device = torch.cuda.device(self.device) if clock.cuda else contextlib.nullcontext()
        with torch.no_grad(), on_device:
            for start, count, size in plan_chunks(n, self.buckets):
                b = self._buckets[self.buckets.index(size)]
                t0 = clock.mark()
                b.face[:count].copy_(x[start:start + count], non_blocking=True)
                if count < size:
                    b.face[count:].zero_()
                if b.geometry is not None:
                    assert geometry is not None
                    b.geometry[:count].copy_(geometry[start:start + count], non_blocking=True)
                    if count < size:
                        b.geometry[count:].zero_()
                if b.normalize_graph is not None:
                    b.normalize_graph.replay()
                else:
                    b.normalized = self.model.normalize(b.face)
                t1 = clock.mark()
                if b.classify_graph is not None:
                    b.classify_graph.replay()
                else:
                    assert b.normalized is not None
                    b.probs = self.model.classify(b.normalized, b.face, b.geometry)
                assert b.normalized is not None and b.probs is not None
                # Copies, never views: the next chunk's replay may reuse these output addresses.
                if want_normalized:
                    normalized_parts.append(b.normalized[:count].to(torch.float32, copy=True))
                for part, p in zip(prob_parts, b.probs):
                    part.append(p[:count].to(torch.float32, copy=True))
                t2 = clock.mark()
                marks.append((t0, t1, t2))
            normalized = _gather(normalized_parts) if want_normalized else None
            probs = (_gather(prob_parts[0]), _gather(prob_parts[1]), _gather(prob_parts[2]))
            t_end = clock.mark()
            if clock.cuda:
                assert isinstance(t_end, torch.cuda.Event)
                t_end.synchronize()
        timings: Timings = {
            Stage.NORMALIZE: sum(clock.seconds(a, m) for a, m, _ in marks),
            Stage.CLASSIFY: sum(clock.seconds(m, c) for _, m, c in marks)
            + clock.seconds(marks[-1][2], t_end),
        }
        return normalized, probs, timings

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        return self._forward_timed(x, geometry)[0]

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        normalized, probs, timings = self._run(self._upload(x), self._upload_geometry(geometry),
                                               want_normalized=True)
        assert normalized is not None
        au_prob, au_int, emo = (p.numpy() for p in probs)
        return (normalized.numpy(), au_prob, au_int, emo), timings

    def _upload(self, x: np.ndarray) -> torch.Tensor:
        # One host->device copy for the whole batch; the per-bucket copies are then on-device.
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def _upload_geometry(self, geometry: np.ndarray | None) -> torch.Tensor | None:
        return None if geometry is None else torch.from_numpy(geometry).to(self.device)

    def infer(self, crops: np.ndarray, *, geometry: np.ndarray | None = None,
              want_normalized: bool = False) -> ModelOutput:
        """As :meth:`Backend.infer`; the normalized faces are only downloaded when asked for."""
        validate_crops(crops, self.config)
        geo = validate_geometry(geometry, self.config, int(crops.shape[0]))
        if crops.shape[0] == 0:
            return super().infer(crops, geometry=geo, want_normalized=want_normalized)
        return self._output(*self._run(self._upload(preprocess(crops, self.config)),
                                       self._upload_geometry(geo), want_normalized))

    def infer_aligned(self, frame: np.ndarray, matrices: np.ndarray, *,
                      geometry: np.ndarray | None = None,
                      want_normalized: bool = False) -> ModelOutput:
        """Analyse the faces of one frame: frame (H, W, 3) uint8 RGB and their image->crop
        matrices (K, 2, 3) (``Aligner.align``'s second output). The frame is uploaded once and
        the crops are warped on the device (:class:`TorchAligner`) straight into the buckets;
        warping is not part of ``timings`` (pre-processing never is, see base.py)."""
        return self.infer_aligned_many([(frame, matrices)], geometry=geometry,
                                       want_normalized=want_normalized)

    def infer_aligned_many(self, items: Sequence[tuple[np.ndarray, np.ndarray]], *,
                           geometry: np.ndarray | None = None,
                           want_normalized: bool = False) -> ModelOutput:
        """:meth:`infer_aligned` over several frames at once (the pipeline batches the faces of
        every stream into one call); rows follow the order of ``items`` and their matrices."""
        self._check_open()
        n = sum(int(np.asarray(m).shape[0]) for _, m in items)
        geo = validate_geometry(geometry, self.config, n)
        if self._aligner is None:
            self._aligner = TorchAligner.from_config(self.config, self.device)
        parts = [self._aligner.warp(frame, matrices) for frame, matrices in items]
        parts = [p for p in parts if p.shape[0]]
        if not parts:
            s, c = self.config.img_size, self.config.in_chans
            return super().infer(np.zeros((0, s, s, c), np.uint8), geometry=geo,
                                 want_normalized=want_normalized)
        faces = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        return self._output(*self._run(faces, self._upload_geometry(geo), want_normalized))

    def _output(self, normalized: torch.Tensor | None, probs: Probs,
                timings: Timings) -> ModelOutput:
        return ModelOutput(
            normalized=denormalize(normalized.numpy(), self.config) if normalized is not None
            else None,
            au_prob=probs[0].numpy(), au_intensity=probs[1].numpy(), emotion_prob=probs[2].numpy(),
            timings=timings,
        )

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "fp16": self.fp16, "buckets": list(self.buckets),
                "cuda_graphs": self.use_graphs, "capture_s": self.capture_seconds}

    def close(self) -> None:
        """Drop graphs, buffers and weights so their device memory can be reused; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buckets = []
        self._aligner = None
        del self.model
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, model_id={self.config.model_id!r}, "
                f"device={str(self.device)!r}, fp16={self.fp16}, graphs={self.use_graphs}, "
                f"buckets={self.buckets})")


def _gather(parts: list[torch.Tensor]) -> torch.Tensor:
    """Chunks (on the device) -> one float32 CPU tensor (one download)."""
    whole = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return whole.cpu()
