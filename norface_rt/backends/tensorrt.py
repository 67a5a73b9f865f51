"""TensorRT runtime backend: the model set's engines on one CUDA device.

Why it looks like this:

* Everything that can be done once is done in ``__init__``: engines deserialised, one execution
  context per engine, device buffers for ``max_batch`` faces bound to the contexts' tensor
  addresses, pinned host buffers, one dedicated CUDA stream. A call then only copies the input in,
  sets the batch size (``set_input_shape``), enqueues the engines and copies the results out.
* The two halves share device buffers by tensor name: the normalizer writes ``normalized`` into
  the very buffer the classifier reads ``normalized`` from, and both read the same ``face``
  buffer, so nothing goes back to the host between them.
* Copies are asynchronous from/to pinned memory on the backend's own stream (a pageable copy
  would serialise with the host and other streams).
* Stage timings come from CUDA events on that stream: ``"normalize"`` includes the input copy,
  ``"classify"`` includes the output copies (the same split the torch backend reports).
* A batch larger than ``max_batch`` runs in chunks of at most ``max_batch`` faces, in order
  (:func:`norface_rt.backends.batching.chunk_slices`), and the results are concatenated; timings
  are summed over the chunks.
* The backend only runs engines: it finds them in ``engine_dir`` or in the engine cache
  (:mod:`norface_rt.backends.trt_cache`). Building them is the builder's job
  (:mod:`norface_rt.engines`, ``norface-rt build-engines``), which depends on this module, never
  the reverse.
* Waiting for the GPU has a deadline (``sync_timeout_s``): a hung GPU raises TimeoutError instead
  of blocking the inference thread forever.

CUDA memory, streams and events come from torch.cuda (no extra dependency); TensorRT and torch are
imported when a backend is created, not when this module is imported.

Threading: a backend instance is meant to be used by one thread (the pipeline's single inference
thread); the buffers are shared per instance, so calls are serialised with a lock anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.backends.base import Backend, Outputs
from norface_rt.backends.batching import chunk_slices
from norface_rt.backends.trt_cache import (
    ENGINES,
    MANIFEST_FILE,
    EngineSet,
    build_options,
    cache_entry,
    load_manifest,
    onnx_hashes,
)
from norface_rt.extras import install_hint
from norface_rt.model_set import (
    CLASSIFIER,
    GEOMETRY_NAME,
    INPUT_NAME,
    NORMALIZED_NAME,
    OUTPUT_NAMES,
    classifier_spec,
    load_config,
)
from norface_rt.types import Stage, Timings

DEFAULT_SYNC_TIMEOUT_S = 60.0
_POLL_S = 0.0001
MAX_LOG_LINES = 400

INSTALL_HINT = f"TensorRT is optional and not installed: {install_hint('tensorrt')}"

# graph -> timing key of the stage that runs it
_STAGE_TIMING = {"normalizer": Stage.NORMALIZE, "classifier": Stage.CLASSIFY}


class TensorRTUnavailable(ImportError):
    """TensorRT (or a CUDA GPU for it) is missing; the message says how to install it."""


def import_tensorrt() -> Any:
    """``import tensorrt``, or TensorRTUnavailable with install instructions. TensorRT < 10 is
    refused: this code uses the name-based tensor API that 10.0 introduced."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: wheel present but libnvinfer missing
        raise TensorRTUnavailable(f"{INSTALL_HINT} (import tensorrt failed: {e})") from e
    major = trt_major(getattr(trt, "__version__", "0"))
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT >= 10 is required (name-based tensor API), found "
                                  f"{getattr(trt, '__version__', '?')}; install TensorRT 10.x: "
                                  f"{install_hint('tensorrt')}")
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except TensorRTUnavailable:
        return False
    return True


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def device_index(device: int | str) -> int:
    """CUDA device index from ``0`` / ``"cuda"`` / ``"cuda:1"`` (how the rest of the CLI spells
    devices); anything else is a ValueError naming the expected forms."""
    if isinstance(device, str):
        text = device.strip().lower()
        if text == "cuda":
            return 0
        if text.startswith("cuda:") and text[5:].isdigit():
            return int(text[5:])
        raise ValueError(f"device must be a CUDA device index, 'cuda' or 'cuda:N', got {device!r}")
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise ValueError(f"device must be a CUDA device index >= 0, 'cuda' or 'cuda:N', got {device!r}")
    return device


def cuda_device(device: int | str) -> tuple[Any, str, tuple[int, int]]:
    """(torch module, GPU name, compute capability) of CUDA device ``device``, via torch.cuda
    (the GPU image's torch has CUDA; no extra dependency)."""
    device = device_index(device)
    try:
        import torch
    except ImportError as e:
        raise TensorRTUnavailable(f"the TensorRT path uses torch.cuda for memory and streams, but "
                                  f"torch is not importable ({e}): {install_hint('tensorrt')}") from e
    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            f"TensorRT engines need an NVIDIA GPU, but torch.cuda.is_available() is False (torch "
            f"{torch.__version__}; a +cpu build has no CUDA). Install a CUDA build of torch on a "
            "machine with an NVIDIA driver; see docs/gpu.md.")
    count = torch.cuda.device_count()
    if device >= count:
        raise ValueError(f"device must be < {count} (CUDA devices visible), got {device}")
    props = torch.cuda.get_device_properties(device)
    return torch, str(props.name), (int(props.major), int(props.minor))


def make_logger(trt: Any, lines: list[str] | None = None,
                min_severity: str = "WARNING") -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and, when ``lines`` is given, appends
    messages at ``min_severity`` or worse to it (the build log kept in the manifest)."""
    sev = trt.ILogger.Severity
    order = [sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING, sev.INFO, sev.VERBOSE]
    keep_upto = order.index(getattr(sev, min_severity))
    to_level = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR,
                sev.WARNING: logging.WARNING, sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}
    trt_log = logging.getLogger("norface_rt.tensorrt")

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            trt_log.log(to_level.get(severity, logging.DEBUG), "%s", msg)
            if lines is not None and order.index(severity) <= keep_upto:
                lines.append(f"[TRT {str(severity).rsplit('.', 1)[-1]}] {msg}")
                del lines[:-MAX_LOG_LINES]

    return _Logger()

def find_engines(model_dir: str | os.PathLike[str], *, out_dir: str | os.PathLike[str] | None = None,
                 max_batch: int = 64, opt_batch: int | None = None, fp16: bool = True,
                 workspace_gib: float = 4.0, fp32_layers: str | Sequence[str] | None = "auto",
                 graphs: str = "split", device: int | str = 0) -> EngineSet | None:
    """The cached EngineSet for these options on this GPU and TensorRT, or None (never builds).

    The options are those of :func:`norface_rt.engines.build_engines`, which writes the entry."""
    opts = build_options(max_batch, opt_batch, fp16, workspace_gib, fp32_layers, graphs)
    trt = import_tensorrt()
    _, gpu, cc = cuda_device(device)
    return cache_entry(model_dir, opts, gpu_name=gpu, compute_capability=cc,
                       trt_version=trt.__version__, root=out_dir).load()


class TrtBackend(Backend):
    """Runs a model set's TensorRT engines (see the module docstring).

    Engines come from ``engine_dir`` when given (a directory written by
    :func:`norface_rt.engines.build_engines`; it must have been built from this model set's ONNX
    files), else from the engine cache entry for ``build_kw`` (the build options: fp16,
    fp32_layers, workspace_gib, opt_batch, out_dir; see :func:`find_engines`); FileNotFoundError
    says how to build them when there is none. ``max_batch`` sizes the buffers and must not exceed
    the engines' optimization-profile maximum. ``device`` is a CUDA device index or ``"cuda"`` /
    ``"cuda:N"``.
    """

    name = "tensorrt"

    def __init__(self, model_dir: str | os.PathLike[str], device: int | str = 0, max_batch: int = 64,
                 engine_dir: str | os.PathLike[str] | None = None,
                 sync_timeout_s: float = DEFAULT_SYNC_TIMEOUT_S, **build_kw: Any) -> None:
        trt = import_tensorrt()
        device = device_index(device)
        torch, gpu_name, cc = cuda_device(device)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if not sync_timeout_s > 0:
            raise ValueError(f"sync_timeout_s must be > 0, got {sync_timeout_s!r}")
        self._lock = threading.Lock()
        self._closed = True  # until fully set up: close() then has nothing to release
        self._trt, self._torch = trt, torch
        self.device = torch.device("cuda", device)
        self.max_batch = max_batch
        self.sync_timeout_s = float(sync_timeout_s)
        self.model_dir = Path(model_dir)
        self.engine_set: EngineSet | None = None
        if engine_dir is not None:
            if build_kw:
                raise ValueError(f"build options {sorted(build_kw)} have no effect with engine_dir "
                                 "(the engines there are already built)")
            self.engine_dir = Path(engine_dir)
            manifest = load_manifest(self.engine_dir)
            if manifest is None:
                raise FileNotFoundError(f"no complete engine set in {self.engine_dir} (expected "
                                        f"{MANIFEST_FILE} and the engine files it lists)")
            self._check_provenance(manifest, gpu_name, cc, trt.__version__)
        else:
            lookup_kw = {k: v for k, v in build_kw.items() if k not in ("force", "timing_cache")}
            es = find_engines(self.model_dir, max_batch=max_batch, device=device, **lookup_kw)
            if es is None:
                raise FileNotFoundError(
                    f"no cached TensorRT engines for {self.model_dir} with these options on "
                    f"{gpu_name}; build them first with `norface-rt build-engines --model-dir "
                    f"{self.model_dir} --max-batch {max_batch}` (norface_rt.engines.build_engines)")
            self.engine_set = es
            self.engine_dir = es.directory
            manifest = es.manifest
        self.manifest: dict[str, Any] = manifest
        graphs = sorted(manifest["engines"],
                        key=lambda g: list(ENGINES).index(g) if g in ENGINES else len(ENGINES))
        if graphs != list(ENGINES):
            raise ValueError(f"{self.engine_dir}: engines {graphs} are not the pair {list(ENGINES)} "
                             "(fused engines are no longer supported; rebuild them)")
        self.config = load_config(self.model_dir)
        self._setup(graphs, manifest)

    def _check_provenance(self, manifest: dict[str, Any], gpu_name: str, cc: tuple[int, int],
                          trt_version: str) -> None:
        ki = manifest.get("key_inputs", {})
        built = ki.get("onnx_sha256", {})
        now = onnx_hashes(self.model_dir, list(built))
        if not built or now != built:
            changed = sorted(k for k in built if now.get(k) != built[k])
            raise ValueError(f"{self.engine_dir}: engines were built from other ONNX files than "
                             f"{self.model_dir} holds (differing: {changed or 'none recorded'}); "
                             "rebuild them")
        if tuple(ki.get("compute_capability", ())) != tuple(cc) or ki.get("trt_version") != trt_version:
            raise ValueError(
                f"{self.engine_dir}: engines were built for compute capability "
                f"{ki.get('compute_capability')} / TensorRT {ki.get('trt_version')}, this is "
                f"{gpu_name} sm{cc[0]}{cc[1]} / TensorRT {trt_version}; rebuild them")

    def _setup(self, graphs: list[str], manifest: dict[str, Any]) -> None:
        trt, torch = self._trt, self._torch
        self._log_lines: list[str] = []
        self._logger = make_logger(trt, self._log_lines, min_severity="ERROR")
        cfg = self.config
        expected_dims: dict[str, tuple[int, ...]] = {
            INPUT_NAME: (cfg.in_chans, cfg.img_size, cfg.img_size),
            NORMALIZED_NAME: (cfg.in_chans, cfg.img_size, cfg.img_size),
            "au_prob": (len(cfg.au_names),), "au_intensity": (len(cfg.au_names),),
            "emotion_prob": (len(cfg.emotion_names),)}
        if cfg.geometry_dim:
            expected_dims[GEOMETRY_NAME] = (cfg.geometry_dim,)
        self._engines: list[Any] = []
        # (timing key, context, input names, output names), in execution order
        self._stages: list[tuple[Stage, Any, tuple[str, ...], tuple[str, ...]]] = []
        self._dev: dict[str, Any] = {}
        self._dims: dict[str, tuple[int, ...]] = {}
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            for g in graphs:
                path = self.engine_dir / manifest["engines"][g]["file"]
                engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
                if engine is None:
                    raise RuntimeError(f"TensorRT could not deserialise {path}: "
                                       f"{' | '.join(self._log_lines[-4:]) or 'no detail'}")
                self._engines.append(engine)
                inputs, outputs = self._check_io(engine, path, g, expected_dims)
                ctx = engine.create_execution_context()
                if ctx is None:
                    raise RuntimeError(f"TensorRT could not create an execution context for {path} "
                                       "(out of GPU memory?)")
                self._stages.append((_STAGE_TIMING[g], ctx, inputs, outputs))
                for name in (*inputs, *outputs):
                    if name not in self._dev:
                        self._dims[name] = expected_dims[name]
                        self._dev[name] = torch.empty((self.max_batch, *expected_dims[name]),
                                                      dtype=torch.float32, device=self.device)
                    if not ctx.set_tensor_address(name, self._dev[name].data_ptr()):
                        raise RuntimeError(f"{path}: set_tensor_address({name!r}) failed")
            host_names = (INPUT_NAME, *OUTPUT_NAMES) + ((GEOMETRY_NAME,) if cfg.geometry_dim else ())
            self._host = {n: torch.empty((self.max_batch, *expected_dims[n]), dtype=torch.float32,
                                         pin_memory=True) for n in host_names}
            self._host_np = {n: t.numpy() for n, t in self._host.items()}
            self._stream = torch.cuda.Stream(device=self.device)
            self._events = [torch.cuda.Event(enable_timing=True)
                            for _ in range(len(self._stages) + 1)]
            torch.cuda.synchronize(self.device)  # allocations done before the first enqueue
        self._closed = False

    def _check_io(self, engine: Any, path: Path, graph: str,
                  expected_dims: dict[str, tuple[int, ...]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        trt = self._trt
        spec = ENGINES[graph][0]
        if spec.name == CLASSIFIER.name:
            spec = classifier_spec(self.config)  # with the geometry input when the model has one
        want_in, want_out = spec.inputs, spec.outputs
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outs = tuple(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        if sorted(ins) != sorted(want_in) or sorted(outs) != sorted(want_out):
            raise ValueError(f"{path}: expected I/O {list(want_in)} -> {list(want_out)}, got "
                             f"{list(ins)} -> {list(outs)}")
        for n in names:
            if engine.get_tensor_dtype(n) != trt.float32:
                raise ValueError(f"{path}: tensor {n!r} has dtype {engine.get_tensor_dtype(n)}, "
                                 "expected float32 (engine I/O stays FP32 even in FP16 builds)")
            # Outputs may report -1 for axes TensorRT only resolves once the input shape is set
            # (the exporter's shape inference leaves the decoder's H, W symbolic); those are
            # checked per call on the context instead (_run_chunk).
            shape, want = tuple(engine.get_tensor_shape(n)), (-1, *expected_dims[n])
            ok = len(shape) == len(want) and shape[0] == -1 and all(
                d == w or (d == -1 and n in outs) for d, w in zip(shape[1:], want[1:]))
            if not ok:
                raise ValueError(f"{path}: tensor {n!r} has shape {shape}, expected {want} "
                                 "for this model set's config")
        for n in ins:
            _, _, pmax = engine.get_tensor_profile_shape(n, 0)
            if int(pmax[0]) < self.max_batch:
                raise ValueError(f"max_batch must be <= {int(pmax[0])} (the engine profile maximum "
                                 f"of {path.name}), got {self.max_batch}")
        return ins, outs

    # -- inference -----------------------------------------------------------------------

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        return self._forward_timed(x, geometry)[0]

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        in_dims = self._dims[INPUT_NAME] if self._dims else None
        if (not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4
                or (in_dims is not None and x.shape[1:] != in_dims)):
            got = f"{getattr(x, 'shape', None)} {getattr(x, 'dtype', type(x).__name__)}"
            raise ValueError(f"x: expected (N, {', '.join(map(str, in_dims or ()))}) float32, got {got}")
        n = x.shape[0]
        with self._lock:
            if self._closed:
                raise RuntimeError("TrtBackend is closed")
            outs = {k: np.empty((n, *self._dims[k]), np.float32) for k in OUTPUT_NAMES}
            timings: Timings = {key: 0.0 for key, _, _, _ in self._stages}
            with self._torch.cuda.device(self.device):
                for sl in chunk_slices(n, self.max_batch):
                    geo = None if geometry is None else np.ascontiguousarray(geometry[sl])
                    for key, secs in self._run_chunk(np.ascontiguousarray(x[sl]), geo, outs,
                                                     sl).items():
                        timings[key] += secs
        normalized, au_prob, au_intensity, emotion_prob = (outs[k] for k in OUTPUT_NAMES)
        return (normalized, au_prob, au_intensity, emotion_prob), timings

    def _run_chunk(self, x: np.ndarray, geometry: np.ndarray | None, outs: dict[str, np.ndarray],
                   sl: slice) -> Timings:
        torch, stream, ev = self._torch, self._stream, self._events
        m = x.shape[0]
        uploads = [(INPUT_NAME, x)]
        if GEOMETRY_NAME in self._dev:
            if geometry is None:
                raise ValueError(f"geometry: model {self.config.model_id!r} consumes "
                                 f"{list(self.config.geometry_inputs)}, got none")
            uploads.append((GEOMETRY_NAME, geometry))
        for name, arr in uploads:
            np.copyto(self._host_np[name][:m], arr)
        ev[0].record(stream)
        with torch.cuda.stream(stream):
            for name, _ in uploads:
                self._dev[name][:m].copy_(self._host[name][:m], non_blocking=True)
        for i, (_, ctx, inputs, outputs) in enumerate(self._stages):
            for name in inputs:
                if not ctx.set_input_shape(name, (m, *self._dims[name])):
                    raise RuntimeError(f"set_input_shape({name!r}, batch {m}) rejected; engine "
                                       f"profile max is below max_batch={self.max_batch}?")
            for name in outputs:  # the buffers were sized for these shapes; never overrun them
                got = tuple(ctx.get_tensor_shape(name))
                if got != (m, *self._dims[name]):
                    raise RuntimeError(f"engine output {name!r} would have shape {got} for batch "
                                       f"{m}, expected {(m, *self._dims[name])}")
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed: "
                                   f"{' | '.join(self._log_lines[-4:]) or 'no detail'}")
            if i < len(self._stages) - 1:
                ev[i + 1].record(stream)
        with torch.cuda.stream(stream):
            for name in OUTPUT_NAMES:
                self._host[name][:m].copy_(self._dev[name][:m], non_blocking=True)
        ev[-1].record(stream)
        self._wait(ev[-1])
        for name in OUTPUT_NAMES:
            outs[name][sl] = self._host_np[name][:m]
        return {key: ev[i].elapsed_time(ev[i + 1]) / 1e3
                for i, (key, _, _, _) in enumerate(self._stages)}

    def _wait(self, event: Any) -> None:
        """Block until ``event`` completed, at most ``sync_timeout_s`` (Event.synchronize() has
        no timeout)."""
        deadline = time.monotonic() + self.sync_timeout_s
        while not event.query():
            if time.monotonic() > deadline:
                raise TimeoutError(f"TensorRT inference did not finish within sync_timeout_s="
                                   f"{self.sync_timeout_s} s (GPU hung or oversubscribed)")
            time.sleep(_POLL_S)

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.device), "max_batch": self.max_batch,
                "engine_dir": str(self.engine_dir)}

    def close(self) -> None:
        """Wait for queued work (bounded), then free contexts, engines and all buffers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            torch = self._torch
            try:
                done = torch.cuda.Event()
                done.record(self._stream)
                self._wait(done)
            except (TimeoutError, RuntimeError):
                pass  # freeing is still right: the process cannot use this stream any more
            self._stages = []  # contexts before their engines, engines before the runtime
            self._engines = []
            self._runtime = None
            self._dev, self._host, self._host_np = {}, {}, {}
            with torch.cuda.device(self.device):
                torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return (f"TrtBackend(model_id={self.config.model_id!r}, device={self.device}, "
                f"max_batch={self.max_batch}, engines={str(getattr(self, 'engine_dir', None))!r})")


__all__ = ["DEFAULT_SYNC_TIMEOUT_S", "INSTALL_HINT", "TensorRTUnavailable", "TrtBackend",
           "cuda_device", "device_index", "find_engines", "import_tensorrt", "make_logger",
           "tensorrt_available", "trt_major"]
