"""The model-set format: which files a model set holds, what their graphs expect, how its config
is read. Everything that writes or reads a model set takes its names from here.

A model set is a directory holding:

* ``config.json``         -- the :class:`~norface_rt.config.ModelConfig`, written last by the
  exporter (its presence marks a complete set);
* ``normalizer.onnx``     -- ``face`` (B, 3, S, S) normalised float32 -> ``normalized``;
* ``classifier.onnx``     -- ``normalized``, ``face`` [, ``geometry``] -> ``au_prob``,
  ``au_intensity``, ``emotion_prob``; run after the normalizer, so each stage is timed and placed
  on its own. ``geometry`` (B, G) float32 is there only when the config declares geometry inputs
  (:func:`classifier_spec`; ``ModelConfig.geometry_dim`` values per face). Both
  graphs embed the same config as ONNX metadata (:data:`META_CONFIG`), so a graph separated from
  its directory still says what it is;
* ``weights.safetensors`` -- the state dict (PyTorch backends, fine-tuning), config embedded;
* ``target.png``          -- the aligned target identity faces are normalized onto;
* ``manifest.json``       -- the sha256 and size of each of the files above
  (:func:`write_manifest`), written last by the exporter. Every load checks it
  (:func:`verify_model_set`): a file that is missing, truncated, altered in place or not listed is
  refused with :class:`ModelSetError` naming it, so damaged or tampered weights can never run
  under the model's ``model_id``. A set written before manifests existed loads with a warning
  (``norface-rt models manifest DIR`` adds one).

Model sets written before v0.2 also hold ``norface.onnx``, the two graphs joined into one
(:data:`LEGACY_COMBINED_FILE`). It is no longer written: inside the pipeline it measured slower
than the pair (65 vs 94 frames/s on 2 cores) and it doubled the size of every model set. A model
set that has only that graph still loads (ONNX Runtime runs it as one ``infer`` stage).

Reading needs neither torch nor onnx: the config comes from ``config.json`` and is checked against
what ONNX Runtime reads from each graph's metadata (:func:`config_from_metadata`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import MAX_CONFIG_BYTES, ConfigFileError, ModelConfig
from norface_rt.files import read_capped, sha256_file

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
NORMALIZER_FILE = "normalizer.onnx"
CLASSIFIER_FILE = "classifier.onnx"
WEIGHTS_FILE = "weights.safetensors"
TARGET_FILE = "target.png"
LEGACY_COMBINED_FILE = "norface.onnx"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "norface-model-set-manifest"
MANIFEST_VERSION = 1
# The files a manifest covers (those of them a set holds); nothing else in the folder is read.
MANIFEST_FILES: tuple[str, ...] = (CONFIG_FILE, NORMALIZER_FILE, CLASSIFIER_FILE, WEIGHTS_FILE,
                                   TARGET_FILE, LEGACY_COMBINED_FILE)
# Why nothing runs the joined graph by choice any more (the --fused flag, fused TensorRT engines).
JOINED_GRAPH_GONE = ("model sets no longer ship the joined graph norface.onnx, which measured "
                     "slower than the normalizer + classifier pair inside the pipeline "
                     "(65 vs 94 frames/s on 2 cores)")

# ONNX metadata_props keys (and the safetensors metadata key of the config).
META_CONFIG = "norface_config"
META_MODEL_ID = "norface_model_id"
META_TRAINED = "norface_trained"

# Graph input / output names.
INPUT_NAME = "face"
NORMALIZED_NAME = "normalized"
GEOMETRY_NAME = "geometry"
PROBABILITY_NAMES: tuple[str, str, str] = ("au_prob", "au_intensity", "emotion_prob")
OUTPUT_NAMES: tuple[str, str, str, str] = (NORMALIZED_NAME, *PROBABILITY_NAMES)


class ModelSetError(ConfigFileError):
    """A model set's file is damaged, tampered with or inconsistent; the message names the file
    and what was expected (the CLI exits 2 with it, never a traceback)."""


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of a model set: its file and the names of its inputs and outputs."""

    name: str
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    doc: str


NORMALIZER = GraphSpec("normalizer", NORMALIZER_FILE, (INPUT_NAME,), (NORMALIZED_NAME,),
                       "Normalizer half. Input 'face': (B,3,S,S) float32, (x/255-mean)/std per "
                       "config; output 'normalized' in the same pixel space.")
CLASSIFIER = GraphSpec("classifier", CLASSIFIER_FILE, (NORMALIZED_NAME, INPUT_NAME),
                       PROBABILITY_NAMES,
                       "Classifier half. Inputs 'normalized' (the normalizer's output) and "
                       "'face' (the normalizer's input), both (B,3,S,S) float32.")
LEGACY_COMBINED = GraphSpec("combined", LEGACY_COMBINED_FILE, (INPUT_NAME,), OUTPUT_NAMES,
                            "Both halves joined (model sets before v0.2).")
# The graphs a model set ships, in execution order.
GRAPHS: tuple[GraphSpec, GraphSpec] = (NORMALIZER, CLASSIFIER)


def classifier_spec(cfg: ModelConfig) -> GraphSpec:
    """The classifier graph of a model with this config: :data:`CLASSIFIER`, plus the
    ``geometry`` input when the config declares geometry inputs."""
    if not cfg.geometry_dim:
        return CLASSIFIER
    return GraphSpec(CLASSIFIER.name, CLASSIFIER.file, (*CLASSIFIER.inputs, GEOMETRY_NAME),
                     CLASSIFIER.outputs,
                     CLASSIFIER.doc + f" Input 'geometry': (B,{cfg.geometry_dim}) float32, "
                     f"{'/'.join(cfg.geometry_inputs)} of each face (config blendshape_names).")


def graph_specs(cfg: ModelConfig) -> tuple[GraphSpec, GraphSpec]:
    """The graphs a model set with this config ships, in execution order."""
    return (NORMALIZER, classifier_spec(cfg))


def config_from_metadata(meta: Mapping[str, str], source: str) -> ModelConfig:
    """Rebuild the ModelConfig embedded in a graph's metadata; ``source`` names the file."""
    if META_CONFIG not in meta:
        raise ValueError(
            f"{source}: ONNX metadata has no {META_CONFIG!r} key (keys: {sorted(meta)}); "
            "was it exported with norface_rt.export?"
        )
    try:
        cfg = ModelConfig.from_dict(json.loads(meta[META_CONFIG]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: invalid {META_CONFIG!r} metadata: {e}") from e
    trained = meta.get(META_TRAINED)
    if trained is not None and trained != str(cfg.trained).lower():
        raise ValueError(
            f"{source}: metadata {META_TRAINED}={trained!r} contradicts config trained={cfg.trained}"
        )
    model_id = meta.get(META_MODEL_ID)
    if model_id is not None and model_id != cfg.model_id:
        raise ValueError(
            f"{source}: metadata {META_MODEL_ID}={model_id!r} contradicts config "
            f"model_id={cfg.model_id!r}"
        )
    return cfg


def metadata_for(cfg: ModelConfig) -> dict[str, str]:
    """The metadata every graph of a model set carries (the inverse of :func:`config_from_metadata`)."""
    return {META_CONFIG: cfg.to_json(), META_MODEL_ID: cfg.model_id,
            META_TRAINED: str(cfg.trained).lower()}


def config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    """Names of the fields in which two configs differ (for error messages)."""
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))


def graph_files(model_dir: str | os.PathLike[str]) -> list[Path]:
    """The graphs to run, in order: the normalizer / classifier pair, or for a model set written
    before v0.2 that lacks it, the legacy combined graph. FileNotFoundError names what is missing."""
    d = Path(model_dir)
    pair = [d / g.file for g in GRAPHS]
    present = [p.is_file() for p in pair]
    if all(present):
        return pair
    legacy = d / LEGACY_COMBINED_FILE
    if legacy.is_file():
        if any(present):
            log.warning("%s holds only one of %s and %s (half-written model set?); using %s",
                        d, NORMALIZER_FILE, CLASSIFIER_FILE, LEGACY_COMBINED_FILE)
        return [legacy]
    missing = [p.name for p, ok in zip(pair, present) if not ok]
    raise FileNotFoundError(f"ONNX model not found: {d} lacks {missing} (a model set holds "
                            f"{NORMALIZER_FILE} and {CLASSIFIER_FILE}; re-export it with "
                            "norface_rt.export.save_model_set)")


def spec_for(path: Path) -> GraphSpec:
    """The GraphSpec of a model-set file name (a lone .onnx file is taken as a combined graph)."""
    for spec in (*GRAPHS, LEGACY_COMBINED):
        if path.name == spec.file:
            return spec
    return LEGACY_COMBINED


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """True for a complete model set: its config and the graphs :func:`graph_files` would run."""
    d = Path(path)
    if not (d / CONFIG_FILE).is_file():
        return False
    try:
        graph_files(d)
    except FileNotFoundError:
        return False
    return True


def load_config(model_dir: str | os.PathLike[str]) -> ModelConfig:
    """The config of a model set, from its ``config.json`` (no graph is opened)."""
    return ModelConfig.load(Path(model_dir) / CONFIG_FILE)


# --------------------------------------------------------------------------- manifest
def write_manifest(model_dir: str | os.PathLike[str]) -> Path:
    """Write ``manifest.json``: sha256 and size of each model-set file the folder holds. The
    exporter calls it last; for a set written before manifests, ``norface-rt models manifest``."""
    d = Path(model_dir)
    if not (d / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{d / CONFIG_FILE} not found: {d} is not a model set")
    files = {name: {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size}
             for name in MANIFEST_FILES if (d / name).is_file()}
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": files}
    out = d / MANIFEST_FILE
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)
    return out


def read_manifest(model_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The ``files`` of a set's manifest (None when it has none); a malformed manifest is a
    :class:`ModelSetError`."""
    p = Path(model_dir) / MANIFEST_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(read_capped(p, MAX_CONFIG_BYTES, "a manifest").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSetError(f"{p}: not valid JSON ({exc}); the manifest is damaged") from exc
    except ValueError as exc:  # larger than any manifest (said by read_capped)
        raise ModelSetError(f"{exc}; the manifest is damaged") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ModelSetError(f"{p}: expected format {MANIFEST_FORMAT!r}, got "
                            f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}")
    if data.get("version") != MANIFEST_VERSION:
        raise ModelSetError(f"{p}: expected manifest version {MANIFEST_VERSION}, got "
                            f"{data.get('version')!r} (written by a newer norface-rt?)")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelSetError(f"{p}: expected a non-empty map 'files', got {files!r}")
    for name, entry in files.items():
        if name not in MANIFEST_FILES:
            raise ModelSetError(f"{p}: lists {name!r}, not a model-set file (expected some of "
                                f"{list(MANIFEST_FILES)})")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or len(entry["sha256"]) != 64 or not isinstance(entry.get("bytes"), int)):
            raise ModelSetError(f"{p}: entry {name!r} must be {{sha256: 64 hex digits, bytes: "
                                f"int}}, got {entry!r}")
    return files


def verify_model_set(model_dir: str | os.PathLike[str]) -> str | None:
    """Check every file of a model set against its manifest.

    Returns None when all match, or a warning (also logged) when the set has no manifest (written
    before manifests existed); raises :class:`ModelSetError` naming the first file that is
    missing, has another size (truncated), another sha256 (altered, corrupt) or is not listed."""
    d = Path(model_dir)
    files = read_manifest(d)
    if files is None:
        warning = (f"model set {d} has no {MANIFEST_FILE} (written before manifests existed): its "
                   "files cannot be checked for damage or tampering; `norface-rt models manifest "
                   f"{d}` adds one")
        log.warning("%s", warning)
        return warning
    for name in MANIFEST_FILES:
        if (d / name).is_file() and name not in files:
            raise ModelSetError(f"{d / name}: not listed in {d / MANIFEST_FILE} (added or "
                                "replaced after the set was written?); refusing to load it")
    for name, entry in files.items():
        p = d / name
        if not p.is_file():
            raise ModelSetError(f"{p}: listed in {MANIFEST_FILE} but missing")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise ModelSetError(f"{p}: expected {entry['bytes']} bytes (per {MANIFEST_FILE}), got "
                                f"{size}: the file is truncated or was altered")
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            raise ModelSetError(f"{p}: sha256 {digest} differs from {entry['sha256']} in "
                                f"{MANIFEST_FILE}: the file is corrupt or was altered")
    return None


def read_graph_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The config embedded in one ONNX graph, read through ONNX Runtime (no onnx package needed)."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model not found: {p}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    return config_from_metadata(sess.get_modelmeta().custom_metadata_map, str(p))


# --------------------------------------------------------------------------- weights
# Bytes per element of each safetensors dtype (the format's own table).
_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                       "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
                       "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the format's own bound


def check_weights_file(path: str | os.PathLike[str], cfg: ModelConfig) -> int:
    """Read ``weights.safetensors`` as the format defines it, without torch: the header (8-byte
    length, then JSON), every tensor's dtype, shape and byte range inside the file (no overlap,
    no byte left over) and the config embedded in its metadata, which must be ``cfg``. Returns
    the number of tensors; a file that a reader would refuse is a :class:`ModelSetError` naming
    it (a truncated file fails here, where only the ONNX graphs were opened before)."""
    p = Path(path)

    def bad(why: str) -> ModelSetError:
        return ModelSetError(f"{p}: not a readable safetensors weights file: {why}")

    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if not 2 <= n <= min(_MAX_SAFETENSORS_HEADER, size - 8):
            raise bad(f"header of {n} bytes declared in a file of {size} bytes")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise bad(f"header is a {type(header).__name__}, not a map")
    meta = header.pop("__metadata__", None) or {}
    data = size - 8 - n
    spans = []
    for name, t in header.items():
        try:
            width = _SAFETENSORS_DTYPES[t["dtype"]]
            count = int(np.prod(t["shape"], dtype=np.int64))
            begin, end = (int(v) for v in t["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"tensor {name!r}: malformed entry {t!r}") from exc
        if not 0 <= begin <= end <= data or end - begin != width * count:
            raise bad(f"tensor {name!r}: bytes {begin}..{end} of a {data}-byte data section for "
                      f"{t['dtype']} {t['shape']} (truncated or damaged)")
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise bad(f"tensor data overlaps or leaves a gap at byte {covered}")
        covered = end
    if covered != data:
        raise bad(f"{data - covered} bytes after the last tensor")
    if META_CONFIG in meta:
        try:
            embedded = ModelConfig.from_json(meta[META_CONFIG])
        except (TypeError, ValueError) as exc:
            raise bad(f"invalid embedded config: {exc}") from exc
        if embedded != cfg:
            raise ModelSetError(f"{p}: embedded config differs from {CONFIG_FILE} in "
                                f"{config_diff(embedded, cfg)}")
    return len(spans)


def read_target_image(model_dir: str | os.PathLike[str], size: int) -> np.ndarray | None:
    """The model set's target identity as (S, S, 3) uint8 RGB, or None when the set has none
    (sets written before ``target.png`` existed)."""
    from norface_rt.images import load_aligned_crop

    p = Path(model_dir) / TARGET_FILE
    if not p.is_file():
        return None
    return load_aligned_crop(p, size, resize=False)
