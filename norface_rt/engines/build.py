"""Build TensorRT engines from a model set's ONNX graphs, cache them, and check their accuracy.

One engine per ONNX graph of the model set: ``normalizer.onnx`` and ``classifier.onnx`` (so the
runtime can still time normalization and classification apart and the classifier reads the
normalizer's output straight from GPU memory). Every engine has a dynamic batch axis (one optimization profile
min=1 / opt=``opt_batch`` / max=``max_batch`` on every input), FP16 enabled unless asked
otherwise, a workspace memory-pool limit, and a timing cache read from and written back to disk
so a rebuild (a new model, other options) re-times only the layers it has not seen.

FP16 and accuracy: ``fp32_layers`` pins precision-sensitive layers (see :mod:`norface_rt.engines.precision`)
to FP32 under ``OBEY_PRECISION_CONSTRAINTS``. ``"auto"`` builds plain FP16 first, compares it with
ONNX Runtime's CPU FP32 output on fixed random crops, and only rebuilds with the pinned layers when
the FP16 engine misses the tolerances below; which choice was made, and every measured error, is
recorded in the :class:`EngineSet` and the ``engines.json`` manifest beside the engines.

The tolerances (module constants, also the acceptance gate of :func:`check_accuracy`, which
compares against PyTorch FP32): AU and emotion probabilities max abs error <= 0.02; AU intensity
(0..5 scale) <= 0.1.

The builder depends on the runtime (:mod:`norface_rt.backends.tensorrt` runs the engines and
measures them, :mod:`norface_rt.backends.trt_cache` owns the cache format, :mod:`norface_rt.reference`
the accuracy oracle shared with ``norface-rt bench``), never the reverse.

Written against the TensorRT 10.x Python API (name-based tensors, ``execute_async_v3``).
TensorRT 11 removed weakly-typed networks (``BuilderFlag.FP16``, per-layer precision): there only
``fp16=False`` builds work, and an FP16 request fails with a clear message. Nothing here imports
TensorRT, torch or CUDA at module import time.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from norface_rt.backends.tensorrt import (
    MAX_LOG_LINES,
    TensorRTUnavailable,
    TrtBackend,
    cuda_device,
    device_index,
    import_tensorrt,
    make_logger,
)
from norface_rt.backends.trt_cache import (
    ENGINES,
    BuildOptions,
    CacheKeyInputs,
    EngineSet,
    build_options,
    cache_entry,
    discard,
    entry_name,
    load_manifest,
    publish,
    staging_dir,
    timing_cache_path,
    write_manifest,
)
from norface_rt.engines.precision import fp32_reason, trt_layer_kind, unmatched_patterns
from norface_rt.reference import make_crops, make_geometry, max_abs_errors, reference_outputs

log = logging.getLogger(__name__)

# Acceptance tolerances (max abs error vs an FP32 reference, over all faces and outputs).
TOL_AU_PROB = 0.02
TOL_EMOTION_PROB = 0.02
TOL_AU_INTENSITY = 0.1  # AU intensity is on a 0..5 scale
TOLERANCES: dict[str, float] = {"au_prob": TOL_AU_PROB, "au_intensity": TOL_AU_INTENSITY,
                                "emotion_prob": TOL_EMOTION_PROB}

# fp32_layers="auto" compares against ONNX Runtime on this many seeded random crops.
AUTO_CHECK_FACES = 8
AUTO_CHECK_SEED = 12345



def supports_weak_typing(trt: Any) -> bool:
    """FP16 builds with per-layer FP32 pins need the weakly-typed API (TensorRT 10.x)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")


def build_engines(model_dir: str | os.PathLike[str], *, out_dir: str | os.PathLike[str] | None = None,
                  max_batch: int = 64, opt_batch: int | None = None, fp16: bool = True,
                  workspace_gib: float = 4.0, fp32_layers: str | Sequence[str] | None = "auto",
                  timing_cache: str | os.PathLike[str] | None = None, force: bool = False,
                  graphs: str = "split", device: int | str = 0) -> EngineSet:
    """Build (or reuse from the cache) the engines of ``model_dir`` for CUDA device ``device``.

    ``out_dir`` is the cache root (default :func:`norface_rt.paths.engine_cache_dir`); the
    engines go to a sub-directory named by the cache key.
    ``opt_batch`` None means min(8, max_batch). ``timing_cache`` None means one file per GPU and
    TensorRT version in the cache root. ``force`` rebuilds even on a cache hit. ``fp32_layers``
    (default ``"auto"``, the same default as ``norface-rt build-engines`` and
    :class:`~norface_rt.backends.tensorrt.TrtBackend`, so they all share one cache entry): see the
    module docstring and :class:`~norface_rt.backends.trt_cache.BuildOptions`.
    """
    opts = build_options(max_batch, opt_batch, fp16, workspace_gib, fp32_layers, graphs)
    device = device_index(device)
    trt = import_tensorrt()
    torch, gpu, cc = cuda_device(device)
    if opts.fp16 and not supports_weak_typing(trt):
        raise RuntimeError(
            f"TensorRT {trt.__version__} has no weakly-typed FP16 builds (BuilderFlag.FP16 and "
            "per-layer precision were removed in TensorRT 11). Install TensorRT 10.x "
            "(pip install 'tensorrt-cu12>=10,<11' or 'tensorrt-cu13>=10,<11') or build with "
            "fp16=False (--fp32).")
    entry = cache_entry(model_dir, opts, gpu_name=gpu, compute_capability=cc,
                        trt_version=trt.__version__, root=out_dir)
    ki, key, final = entry.key_inputs, entry.key, entry.directory
    root = final.parent
    if not force:
        cached = entry.load()
        if cached is not None:
            log.info("engine cache hit: %s", final)
            return cached
    tc_path = Path(timing_cache) if timing_cache is not None else timing_cache_path(root, ki)
    stage = staging_dir(root, final.name)
    try:
        with torch.cuda.device(device):
            manifest = _Builder(trt, Path(model_dir), opts, ki, key, stage, tc_path, device).run()
        write_manifest(stage, manifest)
        publish(stage, final)
    except BaseException:
        discard(stage)
        raise
    published = load_manifest(final, key)
    if published is None:  # only if another process replaced it between publish and here
        raise RuntimeError(f"engine cache entry {final} vanished right after it was written")
    return EngineSet.from_manifest(final, published, cache_hit=False)


class _Builder:
    """One build: parse every graph, pick the precision, build, and (for "auto") measure."""

    def __init__(self, trt: Any, model_dir: Path, opts: BuildOptions, ki: CacheKeyInputs, key: str,
                 stage: Path, tc_path: Path, device: int) -> None:
        self.trt, self.model_dir, self.opts, self.ki, self.key = trt, model_dir, opts, ki, key
        self.stage, self.tc_path, self.device = stage, tc_path, device
        self.lines: list[str] = []
        self.logger = make_logger(trt, self.lines)
        self.builder = trt.Builder(self.logger)
        self.graphs = tuple(ENGINES)

    def note(self, msg: str) -> None:
        log.info("%s", msg)
        self.lines.append(msg)
        del self.lines[:-MAX_LOG_LINES]

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        opts = self.opts
        timing = self._load_timing_cache()
        parsed = {g: self._parse(g) for g in self.graphs}  # parser must outlive the build
        mode = opts.fp32_layers if opts.fp16 else None
        if not opts.fp16 and opts.fp32_layers is not None:
            self.note(f"fp32_layers={opts.fp32_layers!r} ignored: fp16=False builds everything in FP32")
        patterns: tuple[str, ...] = opts.fp32_layers if isinstance(opts.fp32_layers, tuple) else ()
        if patterns:
            names = [net.get_layer(i).name for net, _ in parsed.values() for i in range(net.num_layers)]
            missing = unmatched_patterns(patterns, names)
            if missing:
                example = next((n for n in names if "/" in n), names[0] if names else "?")
                raise ValueError(f"fp32_layers: pattern(s) {missing} match no layer of "
                                 f"{list(self.graphs)} (layer names look like {example!r})")
        precision: dict[str, Any] = {"reference": "onnxruntime CPU fp32", "errors": {},
                                     "fp32_layers": {}, "tolerances": dict(TOLERANCES)}
        if not opts.fp16:
            self._build_all(parsed, timing, pin=None)
            precision["choice"] = "fp32"
        elif mode is None:
            self._build_all(parsed, timing, pin=None)
            precision["choice"] = "fp16"
        elif mode == "norm" or patterns:
            precision["fp32_layers"] = self._build_all(parsed, timing, pin=patterns or "norm")
            precision["choice"] = "fp16+fp32-patterns" if patterns else "fp16+fp32-norm"
        else:  # auto
            self._build_all(parsed, timing, pin=None)
            errors = self._measure()
            precision["errors"]["fp16"] = errors
            bad = tolerance_failures(errors)
            if not bad:
                precision["choice"] = "fp16"
                self.note(f"auto: plain FP16 is within tolerance ({_fmt(errors)})")
            else:
                self.note(f"auto: plain FP16 misses the tolerance on {sorted(bad)} "
                          f"({_fmt(errors)}); rebuilding with normalisation/softmax layers in FP32")
                precision["fp32_layers"] = self._build_all(parsed, timing, pin="norm")
                errors = self._measure()
                precision["errors"]["fp16+fp32-norm"] = errors
                precision["choice"] = "fp16+fp32-norm"
                if tolerance_failures(errors):
                    self.note(f"auto: still over tolerance with FP32 normalisation ({_fmt(errors)}); "
                              "check_accuracy will fail; consider fp16=False")
                else:
                    self.note(f"auto: within tolerance with FP32 normalisation ({_fmt(errors)})")
        if precision["errors"]:
            last = list(precision["errors"].values())[-1]
            precision["within_tolerance"] = not tolerance_failures(last)
        self._save_timing_cache(timing)
        secs = time.perf_counter() - t0
        self.note(f"built {len(self.graphs)} engine(s) in {secs:.1f} s")
        return self._manifest(precision, secs)

    # -- steps ---------------------------------------------------------------------------

    def _parse(self, graph: str) -> tuple[Any, Any]:
        trt = self.trt
        spec = ENGINES[graph][0]
        onnx_file, inputs, outputs = spec.file, spec.inputs, spec.outputs
        path = self.model_dir / onnx_file
        flags = 0
        if not self.opts.fp16 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            # FP32 graph + strong typing = an FP32 engine on every TensorRT (required on 11.x).
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = self.builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(path)):
            errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"TensorRT could not parse {path}: " + "; ".join(errs or ["(no detail)"]))
        got_in = [network.get_input(i).name for i in range(network.num_inputs)]
        got_out = [network.get_output(i).name for i in range(network.num_outputs)]
        if sorted(got_in) != sorted(inputs) or sorted(got_out) != sorted(outputs):
            raise ValueError(f"{path}: expected I/O {list(inputs)} -> {list(outputs)}, got "
                             f"{got_in} -> {got_out}")
        for i in range(network.num_inputs):
            t = network.get_input(i)
            shape = tuple(t.shape)
            if len(shape) < 2 or shape[0] != -1 or any(d < 1 for d in shape[1:]):
                raise ValueError(f"{path}: input {t.name!r} must have a dynamic batch axis and "
                                 f"static other axes, e.g. (-1, 3, S, S); got {shape} (re-export "
                                 "with norface_rt.export)")
        self.note(f"parsed {onnx_file}: {network.num_layers} layers")
        return network, parser

    def _pin(self, network: Any, pin: str | tuple[str, ...]) -> list[str]:
        """Mark the chosen layers FP32 (precision and every output type); returns their names."""
        trt = self.trt
        patterns = pin if isinstance(pin, tuple) else ()
        pinned: list[str] = []
        skipped: list[str] = []
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            reason = fp32_reason(layer.name, trt_layer_kind(layer.type, layer.name), patterns)
            if reason is None:
                continue
            outs = [layer.get_output(j) for j in range(layer.num_outputs)]
            if not outs or any(o.dtype != trt.float32 for o in outs):
                skipped.append(layer.name)  # shape / index tensors: precision does not apply
                continue
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
        if skipped:
            self.note(f"not pinned (non-float outputs): {skipped[:10]}"
                      + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""))
        return pinned

    def _unpin(self, network: Any) -> None:
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.precision_is_set:
                layer.reset_precision()
            for j in range(layer.num_outputs):
                if layer.output_type_is_set(j):
                    layer.reset_output_type(j)

    def _build_all(self, parsed: Mapping[str, tuple[Any, Any]], timing: Any,
                   pin: str | tuple[str, ...] | None) -> dict[str, list[str]]:
        trt, opts = self.trt, self.opts
        pinned_all: dict[str, list[str]] = {}
        for graph, (network, _parser) in parsed.items():
            self._unpin(network)
            config = self.builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                         int(opts.workspace_gib * (1 << 30)))
            if opts.fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            profile = self.builder.create_optimization_profile()
            for i in range(network.num_inputs):
                t = network.get_input(i)
                rest = tuple(t.shape)[1:]
                profile.set_shape(t.name, (1, *rest), (opts.opt_batch, *rest),
                                  (opts.max_batch, *rest))
            config.add_optimization_profile(profile)
            if timing is not None:
                config.set_timing_cache(timing, False)
            if pin is not None:
                pinned_all[graph] = self._pin(network, pin)
                config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
                self.note(f"{graph}: {len(pinned_all[graph])} layer(s) pinned to FP32")
            t0 = time.perf_counter()
            plan = self.builder.build_serialized_network(network, config)
            if plan is None:
                tail = " | ".join(self.lines[-8:])
                raise RuntimeError(f"TensorRT failed to build the {graph} engine; last log lines: "
                                   f"{tail}")
            out = self.stage / ENGINES[graph][1]
            with open(out, "wb") as f:
                f.write(plan)
            self.note(f"{graph}: engine {out.stat().st_size / 2**20:.1f} MiB built in "
                      f"{time.perf_counter() - t0:.1f} s")
        return pinned_all

    def _measure(self) -> dict[str, float]:
        """Max abs error of the staged engines vs ONNX Runtime CPU FP32 on fixed random crops."""
        from norface_rt.backends.onnx_backend import OrtBackend

        write_manifest(self.stage, self._manifest({}, None))  # provisional, for TrtBackend
        ort = OrtBackend(self.model_dir, providers=["CPUExecutionProvider"])
        crops = make_crops(AUTO_CHECK_FACES, ort.config.img_size, AUTO_CHECK_SEED)
        geo = make_geometry(AUTO_CHECK_FACES, ort.config, AUTO_CHECK_SEED)
        ref = ort.infer(crops, geometry=geo)
        ort.close()
        with TrtBackend(self.model_dir, device=self.device, max_batch=self.opts.max_batch,
                        engine_dir=self.stage) as trt_backend:
            got = trt_backend.infer(crops, geometry=geo)
        return max_abs_errors(got, {k: getattr(ref, k) for k in TOLERANCES})

    def _load_timing_cache(self) -> Any:
        config = self.builder.create_builder_config()
        data = b""
        try:
            data = self.tc_path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as e:
            self.note(f"timing cache {self.tc_path} unreadable ({e}); starting a new one")
        cache = config.create_timing_cache(data) if data else None
        if data and cache is None:
            self.note(f"timing cache {self.tc_path} rejected by TensorRT; starting a new one")
        if cache is None:
            cache = config.create_timing_cache(b"")
        elif not config.set_timing_cache(cache, False):
            self.note(f"timing cache {self.tc_path} does not match this GPU/TensorRT; starting a new one")
            cache = config.create_timing_cache(b"")
        else:
            self.note(f"timing cache loaded from {self.tc_path} ({len(data)} bytes)")
        return cache

    def _save_timing_cache(self, cache: Any) -> None:
        if cache is None:
            return
        blob = cache.serialize()
        self.tc_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tc_path.with_name(f".{self.tc_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, self.tc_path)
        self.note(f"timing cache saved to {self.tc_path}")

    def _manifest(self, precision: dict[str, Any], secs: float | None) -> dict[str, Any]:
        return {
            "key": self.key, "entry": entry_name(self.ki), "key_inputs": self.ki.to_dict(),
            "engines": {g: {"file": ENGINES[g][1], "onnx": ENGINES[g][0].file,
                            "inputs": list(ENGINES[g][0].inputs),
                            "outputs": list(ENGINES[g][0].outputs)}
                        for g in self.graphs},
            "precision": precision, "build_log": list(self.lines), "build_seconds": secs,
            "built_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "model_dir": str(self.model_dir.resolve()), "timing_cache": str(self.tc_path),
        }


def tolerance_failures(errors: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Outputs whose error exceeds its tolerance (NaN always fails): name -> (error, tolerance)."""
    return {k: (float(errors[k]), tol) for k, tol in TOLERANCES.items()
            if not (k in errors and float(errors[k]) <= tol)}


def _fmt(errors: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in errors.items())


@dataclass
class AccuracyReport:
    """TensorRT vs an FP32 reference on ``n`` seeded random crops."""

    n: int
    errors: dict[str, float]
    tolerances: dict[str, float]
    failures: dict[str, tuple[float, float]]
    reference: str

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        rows = [f"  {k:<13} max abs err {self.errors.get(k, math.nan):.5f}  (tolerance "
                f"{tol:g}) {'FAIL' if k in self.failures else 'ok'}"
                for k, tol in self.tolerances.items()]
        head = (f"accuracy vs {self.reference} on {self.n} random crops: "
                f"{'PASS' if self.passed else 'FAIL'}")
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "errors": self.errors, "tolerances": self.tolerances,
                "failures": {k: list(v) for k, v in self.failures.items()},
                "reference": self.reference, "passed": self.passed}


def check_accuracy(target: EngineSet | TrtBackend, model_dir: str | os.PathLike[str],
                   n: int = 16, seed: int = 0, device: int = 0) -> AccuracyReport:
    """Compare TensorRT with PyTorch FP32 on CPU (:func:`norface_rt.reference.reference_outputs`) on
    the same ``n`` seeded random crops, against :data:`TOLERANCES`. Returns the report; callers
    decide whether a failure is fatal (the CLI exits 1)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(target, TrtBackend):
        backend, own = target, False
    elif isinstance(target, EngineSet):
        backend = TrtBackend(model_dir, device=device, max_batch=target.options.max_batch,
                             engine_dir=target.directory)
        own = True
    else:
        raise TypeError(f"target: expected an EngineSet or a TrtBackend, got {type(target).__name__}")
    try:
        crops = make_crops(n, backend.config.img_size, seed)
        geo = make_geometry(n, backend.config, seed)
        ref = reference_outputs(model_dir, {n: crops}, {n: geo})[n]
        errors = max_abs_errors(backend.infer(crops, geometry=geo), ref)
    finally:
        if own:
            backend.close()
    return AccuracyReport(n=n, errors=errors, tolerances=dict(TOLERANCES),
                          failures=tolerance_failures(errors), reference="PyTorch fp32 (CPU)")


__all__ = ["AUTO_CHECK_FACES", "AccuracyReport", "TOLERANCES", "TOL_AU_INTENSITY", "TOL_AU_PROB",
           "TOL_EMOTION_PROB", "TensorRTUnavailable", "build_engines", "check_accuracy",
           "supports_weak_typing", "tolerance_failures"]
