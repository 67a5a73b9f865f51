"""Where built TensorRT engines live, and when an existing one may be reused.

A serialized TensorRT engine is only valid for the exact GPU model (compute capability and, for
tactic choices, the SKU), the exact TensorRT version, the exact ONNX graph and the options it was
built with. Reusing one across any of those changes either fails at deserialisation or, worse,
silently runs an engine built from an older model. So every engine directory is named by a key
that hashes all of them, and a directory is reused only when its manifest records that same key
and every engine file it lists is present with the recorded size and sha256.

This module never imports TensorRT, torch or CUDA: the key is a pure function of
:class:`CacheKeyInputs`, so it is unit-testable on any machine. Collecting the inputs (GPU name,
TensorRT version) is :mod:`engines.build`'s job.

Layout::

    <root>/                                   $NORFACE_RT_ENGINE_CACHE or ~/.cache/norface-rt/engines
      timing-<gpu>-sm<XY>-trt<ver>.cache      TensorRT timing cache (shared by every model)
      <gpu>-sm<XY>-trt<ver>-<hash16>/         one directory per cache key
        normalizer.engine  classifier.engine  (or norface.engine for graphs="fused")
        engines.json                          the manifest, written last (its presence marks
                                              a complete build)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

ENGINE_CACHE_ENV = "NORFACE_RT_ENGINE_CACHE"
MANIFEST_FILE = "engines.json"
# Bump when the build recipe changes in a way that makes old engines wrong (not just slower):
# it is part of every key, so old directories are simply never matched again.
RECIPE_VERSION = 1

GraphSet = Literal["split", "fused"]
GRAPH_SETS: tuple[GraphSet, ...] = ("split", "fused")
# fp32_layers modes that are not lists of layer-name patterns.
FP32_MODES: tuple[str, ...] = ("auto", "norm")


@dataclass(frozen=True)
class BuildOptions:
    """Everything about a build that changes the engine's contents (and so is part of the key).

    ``fp32_layers``: None = plain FP16 (TensorRT picks every layer's precision); ``"norm"`` = pin
    the normalisation / softmax layers (:mod:`engines.precision`) to FP32; ``"auto"`` = try plain
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

    def validate(self) -> "BuildOptions":
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
    def from_dict(cls, d: Mapping[str, Any]) -> "BuildOptions":
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
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()
    return s[:40] or "unknown"


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
    """``$NORFACE_RT_ENGINE_CACHE``, else ``~/.cache/norface-rt/engines``."""
    env = os.environ.get(ENGINE_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "norface-rt" / "engines"


def timing_cache_path(root: Path, inputs: CacheKeyInputs) -> Path:
    """One timing cache per (GPU, TensorRT version), shared by every model and option set:
    tactic timings depend on the layer shapes and the hardware, not on which model asked."""
    return Path(root) / (
        f"timing-{device_tag(inputs.gpu_name, inputs.compute_capability, inputs.trt_version)}.cache")


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def onnx_hashes(model_dir: str | os.PathLike[str], files: Sequence[str]) -> dict[str, str]:
    """sha256 of each named ONNX file of a model set; a missing file is a FileNotFoundError."""
    d = Path(model_dir)
    out: dict[str, str] = {}
    for name in files:
        p = d / name
        if not p.is_file():
            raise FileNotFoundError(f"ONNX graph not found: {p} (a model set written by "
                                    "norface_rt.export.save_model_set holds it)")
        out[name] = file_sha256(p)
    return out


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


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
                if p.stat().st_size != rec.get("size") or file_sha256(p) != rec.get("sha256"):
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


__all__ = ["BuildOptions", "CacheKeyInputs", "ENGINE_CACHE_ENV", "FP32_MODES", "GRAPH_SETS",
           "MANIFEST_FILE", "RECIPE_VERSION", "cache_key", "default_cache_root", "device_tag",
           "discard", "entry_name", "file_sha256", "load_manifest", "onnx_hashes", "publish",
           "staging_dir", "timing_cache_path", "write_manifest"]
