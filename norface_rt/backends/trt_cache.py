"""Where built TensorRT engines live, and when an existing one may be reused.

A serialized TensorRT engine is only valid for the exact GPU model (compute capability and, for
tactic choices, the SKU), the exact TensorRT version, the exact ONNX graph and the options it was
built with. Reusing one across any of those changes either fails at deserialisation or, worse,
silently runs an engine built from an older model. So every engine directory is named by a key
that hashes all of them, and a directory is reused only when its manifest records that same key
and every engine file it lists is present with the recorded size and sha256.

It is the runtime's side of the engine cache: the TensorRT backend
(:mod:`norface_rt.backends.tensorrt`) looks entries up here, and the engine builder
(:mod:`norface_rt.engines`) writes them with the same functions, so the builder depends on the
runtime and never the reverse. This module never imports TensorRT, torch or CUDA: the key is a
pure function of :class:`CacheKeyInputs`, so it is unit-testable on any machine.

Layout::

    <root>/                                   norface_rt.paths.engine_cache_dir()
      timing-<gpu>-sm<XY>-trt<ver>.cache      TensorRT timing cache (shared by every model)
      <gpu>-sm<XY>-trt<ver>-<hash16>/         one directory per cache key
        normalizer.engine  classifier.engine
        engines.json                          the manifest, written last (its presence marks
                                              a complete build)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from norface_rt.files import sha256_bytes, sha256_file, slug
from norface_rt.model_set import CLASSIFIER, JOINED_GRAPH_GONE, NORMALIZER, GraphSpec
from norface_rt.paths import ENGINE_CACHE_ENV, engine_cache_dir

MANIFEST_FILE = "engines.json"
# Bump when the build recipe changes in a way that makes old engines wrong (not just slower):
# it is part of every key, so old directories are simply never matched again.
RECIPE_VERSION = 1

# One engine per graph of the model set, in execution order: graph name -> (spec, engine file).
ENGINES: dict[str, tuple[GraphSpec, str]] = {
    NORMALIZER.name: (NORMALIZER, "normalizer.engine"),
    CLASSIFIER.name: (CLASSIFIER, "classifier.engine"),
}
GraphSet = Literal["split"]
GRAPH_SETS: tuple[GraphSet, ...] = ("split",)
FUSED_REMOVED = f"'fused' engines are no longer built: {JOINED_GRAPH_GONE}; use 'split'"
# fp32_layers modes that are not lists of layer-name patterns.
FP32_MODES: tuple[str, ...] = ("auto", "norm")


@dataclass(frozen=True)
class BuildOptions:
    """Everything about a build that changes the engine's contents (and so is part of the key).

    ``fp32_layers``: None = plain FP16 (TensorRT picks every layer's precision); ``"norm"`` = pin
    the normalisation / softmax layers (:mod:`norface_rt.engines.precision`) to FP32; ``"auto"`` = try plain
    FP16 first and pin those layers only if the FP16 engine misses the accuracy tolerance; a
    tuple of glob patterns = pin the layers whose names match. Ignored when ``fp16`` is False
    (everything is FP32 then). The timing cache and ``force`` are not options in this sense:
    they change how long a build takes, not what a correct engine computes.
    """

    max_batch: int = 64
    opt_batch: int = 8
    fp16: bool = True
    workspace_gib: float = 4.0
    fp32_layers: str | tuple[str, ...] | None = None
    graphs: GraphSet = "split"

    def __post_init__(self) -> None:
        # Lists from callers become tuples so the dataclass stays hashable and the key canonical.
        if isinstance(self.fp32_layers, list):
            object.__setattr__(self, "fp32_layers", tuple(self.fp32_layers))

    def validate(self) -> BuildOptions:
        """Raise ValueError naming the field and the expected vs actual value; returns self."""
        for name in ("max_batch", "opt_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch must be <= max_batch ({self.max_batch}), got {self.opt_batch}")
        if not isinstance(self.fp16, bool):
            raise ValueError(f"fp16 must be True or False, got {self.fp16!r}")
        ws = self.workspace_gib
        if isinstance(ws, bool) or not isinstance(ws, (int, float)) or not 0 < ws <= 1024:
            raise ValueError(f"workspace_gib must be a number in (0, 1024], got {ws!r}")
        fl = self.fp32_layers
        if isinstance(fl, str):
            if fl not in FP32_MODES:
                raise ValueError(f"fp32_layers must be None, one of {list(FP32_MODES)} or a list of "
                                 f"layer-name patterns, got {fl!r}")
        elif fl is not None:
            if not fl or not all(isinstance(p, str) and p.strip() for p in fl):
                raise ValueError(f"fp32_layers: a list of layer-name patterns must hold non-empty "
                                 f"strings, got {list(fl)!r}")
        if self.graphs == "fused":
            raise ValueError(f"graphs: {FUSED_REMOVED}")
        if self.graphs not in GRAPH_SETS:
            raise ValueError(f"graphs must be one of {list(GRAPH_SETS)}, got {self.graphs!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["workspace_gib"] = float(self.workspace_gib)
        d["fp32_layers"] = (list(self.fp32_layers) if isinstance(self.fp32_layers, tuple)
                            else self.fp32_layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildOptions:
        fl = d.get("fp32_layers")
        return cls(max_batch=d["max_batch"], opt_batch=d["opt_batch"], fp16=d["fp16"],
                   workspace_gib=d["workspace_gib"],
                   fp32_layers=tuple(fl) if isinstance(fl, list) else fl, graphs=d["graphs"])


@dataclass(frozen=True)
class CacheKeyInputs:
    """What an engine depends on. ``onnx_sha256`` maps ONNX file name -> sha256 hex digest."""

    gpu_name: str
    compute_capability: tuple[int, int]
    trt_version: str
    onnx_sha256: tuple[tuple[str, str], ...]
    options: BuildOptions = field(default_factory=BuildOptions)

    def __post_init__(self) -> None:
        # Accept a dict / list for the hashes; store them sorted so order never changes the key.
        h = self.onnx_sha256
        items = h.items() if isinstance(h, Mapping) else h
        object.__setattr__(self, "onnx_sha256", tuple(sorted((str(k), str(v)) for k, v in items)))
        object.__setattr__(self, "compute_capability", tuple(int(c) for c in self.compute_capability))

    def to_dict(self) -> dict[str, Any]:
        return {"recipe_version": RECIPE_VERSION, "gpu_name": self.gpu_name,
                "compute_capability": list(self.compute_capability),
                "trt_version": self.trt_version, "onnx_sha256": dict(self.onnx_sha256),
                "options": self.options.to_dict()}


def cache_key(inputs: CacheKeyInputs) -> str:
    """sha256 (hex) of the canonical JSON of ``inputs``: equal inputs give equal keys on any
    machine and Python version, and a change in any field gives a different key."""
    blob = json.dumps(inputs.to_dict(), sort_keys=True, separators=(",", ":"))
    return sha256_bytes(blob.encode("utf-8"))


def _slug(text: str) -> str:
    return slug(text, fallback="unknown", lower=True, max_len=40)


def device_tag(gpu_name: str, compute_capability: Sequence[int], trt_version: str) -> str:
    """Readable prefix shared by a key's directory and the timing cache, e.g.
    ``nvidia-h100-80gb-hbm3-sm90-trt10.7.0``."""
    major, minor = (int(c) for c in compute_capability)
    return f"{_slug(gpu_name)}-sm{major}{minor}-trt{_slug(trt_version)}"


def entry_name(inputs: CacheKeyInputs) -> str:
    """Directory name of a key: readable device tag + the first 16 hex digits of the key."""
    return (f"{device_tag(inputs.gpu_name, inputs.compute_capability, inputs.trt_version)}-"
            f"{cache_key(inputs)[:16]}")


def default_cache_root() -> Path:
    """``$NORFACE_RT_ENGINE_CACHE``, else ``engines/`` in the user cache (see norface_rt.paths)."""
    return engine_cache_dir()


def timing_cache_path(root: Path, inputs: CacheKeyInputs) -> Path:
    """One timing cache per (GPU, TensorRT version), shared by every model and option set:
    tactic timings depend on the layer shapes and the hardware, not on which model asked."""
    return Path(root) / (
        f"timing-{device_tag(inputs.gpu_name, inputs.compute_capability, inputs.trt_version)}.cache")


def onnx_hashes(model_dir: str | os.PathLike[str], files: Sequence[str]) -> dict[str, str]:
    """sha256 of each named ONNX file of a model set; a missing file is a FileNotFoundError."""
    d = Path(model_dir)
    out: dict[str, str] = {}
    for name in files:
        p = d / name
        if not p.is_file():
            raise FileNotFoundError(f"ONNX graph not found: {p} (a model set written by "
                                    "norface_rt.export.save_model_set holds it)")
        out[name] = sha256_file(p)
    return out


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def load_manifest(entry_dir: str | os.PathLike[str], key: str | None = None,
                  verify_files: bool = True) -> dict[str, Any] | None:
    """The manifest of a complete cache entry, or None when the entry is absent, incomplete,
    corrupt, or (with ``key``) was built for another key. Never raises for a bad entry: a bad
    entry is simply a cache miss and gets rebuilt."""
    d = Path(entry_dir)
    mpath = d / MANIFEST_FILE
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("engines"), dict):
        return None
    if key is not None and manifest.get("key") != key:
        return None
    if verify_files:
        for rec in manifest["engines"].values():
            if not isinstance(rec, dict) or "file" not in rec:
                return None
            p = d / rec["file"]
            try:
                if p.stat().st_size != rec.get("size") or sha256_file(p) != rec.get("sha256"):
                    return None
            except OSError:
                return None
    return manifest


def write_manifest(entry_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``engines.json`` atomically after recording each engine file's size and sha256
    (``manifest["engines"]`` maps graph -> {"file": name, ...})."""
    d = Path(entry_dir)
    for rec in manifest["engines"].values():
        rec.update(_describe(d / rec["file"]))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, d / MANIFEST_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / MANIFEST_FILE


def staging_dir(root: str | os.PathLike[str], name: str) -> Path:
    """A fresh private directory under ``root`` to build an entry in; :func:`publish` moves it
    into place. Building beside the final location keeps the move a same-filesystem rename."""
    r = Path(root)
    r.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=r, prefix=f".staging-{name}-"))


def publish(staged: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Atomically replace ``final`` by the finished ``staged`` directory.

    A directory cannot be renamed over a non-empty one, so an existing entry is first renamed
    aside and removed after the new one is in place; a reader sees either the old complete entry
    or the new complete one (or, for an instant, none: a miss, never a mix of the two).
    """
    staged, final = Path(staged), Path(final)
    trash: Path | None = None
    if final.exists():
        trash = final.with_name(f".old-{final.name}-{os.getpid()}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
    os.replace(staged, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def discard(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _graph_order(graph: str) -> int:
    return list(ENGINES).index(graph) if graph in ENGINES else len(ENGINES)


@dataclass
class EngineSet:
    """A complete, cached set of engines for one model set and one cache key.

    ``engines`` maps graph name (normalizer, classifier) -> engine file. ``precision`` records the
    FP16/FP32 choice: ``choice`` ("fp32", "fp16", "fp16+fp32-norm", "fp16+fp32-patterns"),
    ``fp32_layers`` (graph -> pinned layer names), ``errors`` (candidate -> output -> max abs
    error vs ONNX Runtime CPU FP32, measured only for "auto") and ``within_tolerance``.
    ``cache_hit`` is True when nothing was built.
    """

    key: str
    directory: Path
    engines: dict[str, Path]
    options: BuildOptions
    key_inputs: dict[str, Any]
    precision: dict[str, Any]
    build_log: list[str]
    build_seconds: float | None
    cache_hit: bool
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def graphs(self) -> GraphSet:
        return self.options.graphs

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @classmethod
    def from_manifest(cls, directory: Path, manifest: Mapping[str, Any], cache_hit: bool
                      ) -> EngineSet:
        return cls(key=manifest["key"], directory=Path(directory),
                   engines={g: Path(directory) / manifest["engines"][g]["file"]
                            for g in sorted(manifest["engines"], key=_graph_order)},
                   options=BuildOptions.from_dict(manifest["key_inputs"]["options"]),
                   key_inputs=dict(manifest["key_inputs"]),
                   precision=dict(manifest.get("precision", {})),
                   build_log=list(manifest.get("build_log", [])),
                   build_seconds=manifest.get("build_seconds"), cache_hit=cache_hit,
                   manifest=dict(manifest))

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "directory": str(self.directory),
                "engines": {g: str(p) for g, p in self.engines.items()},
                "options": self.options.to_dict(), "key_inputs": self.key_inputs,
                "precision": self.precision, "build_seconds": self.build_seconds,
                "cache_hit": self.cache_hit}


def build_options(max_batch: int = 64, opt_batch: int | None = None, fp16: bool = True,
                  workspace_gib: float = 4.0, fp32_layers: str | Sequence[str] | None = "auto",
                  graphs: str = "split") -> BuildOptions:
    """Validated :class:`BuildOptions` from the keyword arguments builders and backends take
    (``opt_batch`` None means min(8, max_batch); ``fp32_layers`` a list becomes a tuple)."""
    if isinstance(fp32_layers, (list, tuple)):
        fl: str | tuple[str, ...] | None = tuple(fp32_layers)
    elif fp32_layers is None or isinstance(fp32_layers, str):
        fl = fp32_layers
    else:
        raise ValueError(f"fp32_layers must be None, 'auto', 'norm' or a list of layer-name "
                         f"patterns, got {fp32_layers!r}")
    if opt_batch is None:
        opt_batch = min(8, max_batch) if isinstance(max_batch, int) else max_batch
    opts = BuildOptions(max_batch=max_batch, opt_batch=opt_batch, fp16=fp16,
                        workspace_gib=workspace_gib, fp32_layers=fl,
                        graphs=graphs)  # type: ignore[arg-type]  # validate() checks it
    return opts.validate()


def key_inputs_for(model_dir: str | os.PathLike[str], opts: BuildOptions, gpu_name: str,
                   compute_capability: tuple[int, int], trt_version: str) -> CacheKeyInputs:
    files = [spec.file for spec, _ in ENGINES.values()]
    return CacheKeyInputs(gpu_name=gpu_name, compute_capability=compute_capability,
                          trt_version=trt_version,
                          onnx_sha256=tuple(sorted(onnx_hashes(model_dir, files).items())),
                          options=opts)


@dataclass(frozen=True)
class CacheEntry:
    """Where the engines for one cache key live; :meth:`load` says whether they are there."""

    key_inputs: CacheKeyInputs
    key: str
    directory: Path

    def load(self) -> EngineSet | None:
        """The complete EngineSet in :attr:`directory` built for :attr:`key`, or None (a miss:
        absent, half-written, corrupt, or built for another key)."""
        manifest = load_manifest(self.directory, self.key)
        return EngineSet.from_manifest(self.directory, manifest, cache_hit=True) if manifest else None


def cache_entry(model_dir: str | os.PathLike[str], opts: BuildOptions, *, gpu_name: str,
                compute_capability: tuple[int, int], trt_version: str,
                root: str | os.PathLike[str] | None = None) -> CacheEntry:
    """The cache entry for ``model_dir``'s ONNX files built with ``opts`` on the given GPU and
    TensorRT version (pure: no TensorRT or CUDA needed, so the lookup is testable anywhere)."""
    ki = key_inputs_for(model_dir, opts.validate(), gpu_name, compute_capability, trt_version)
    base = Path(root) if root is not None else default_cache_root()
    return CacheEntry(ki, cache_key(ki), base / entry_name(ki))


__all__ = ["ENGINES", "ENGINE_CACHE_ENV", "FP32_MODES", "GRAPH_SETS", "MANIFEST_FILE",
           "RECIPE_VERSION", "BuildOptions", "CacheEntry", "CacheKeyInputs", "EngineSet",
           "build_options", "cache_entry", "cache_key", "default_cache_root", "device_tag",
           "discard", "entry_name", "key_inputs_for", "load_manifest", "onnx_hashes", "publish",
           "staging_dir", "timing_cache_path", "write_manifest"]
