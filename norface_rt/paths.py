"""Where model files are looked for, in one documented order.

Norface model set (a directory :func:`norface_rt.model_set.is_model_dir` accepts):
  1. the ``--model-dir`` flag, 2. ``$NORFACE_RT_MODEL_DIR``, 3. ``<user cache>/models/norface``,
  4. the default model shipped inside the package (``norface_rt/assets/model``), if present.
MediaPipe face landmarker (``face_landmarker*.task``):
  1. the ``--landmarker`` flag, 2. ``$NORFACE_RT_LANDMARKER`` (a file), 3. ``$NORFACE_RT_SHARED_MODELS``
  (a directory), 4. ``<user cache>/models``, 5. the bundle shipped inside the package
  (``norface_rt/assets/landmarker``, Apache-2.0, with its NOTICE and LICENSE), checked against its
  manifest before it is used.
TensorRT engines: ``$NORFACE_RT_ENGINE_CACHE``, else ``<user cache>/engines``.
The user cache is ``$NORFACE_RT_CACHE`` or ``$XDG_CACHE_HOME/norface-rt`` or ``~/.cache/norface-rt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from norface_rt.files import sha256_file
from norface_rt.model_set import CLASSIFIER_FILE, CONFIG_FILE, NORMALIZER_FILE, is_model_dir

LANDMARKER_FILENAMES = ("face_landmarker.task", "face_landmarker_v2_with_blendshapes.task")
# The exact bundle the project is developed and tested with (MediaPipe's own test asset, Apache-2.0).
# `norface-rt models download` refuses any file whose sha256 differs.
LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-assets/face_landmarker_v2_with_blendshapes.task"
)
LANDMARKER_SHA256 = "b261925d4aad812b47a0e8d58c1baa1223270a5d1f663d78338bc881c003879d"


class ModelNotFoundError(FileNotFoundError):
    """A model file is missing; the message lists every place that was searched."""


ENGINE_CACHE_ENV = "NORFACE_RT_ENGINE_CACHE"


def cache_dir() -> Path:
    """The user cache root every other cached file lives under."""
    if os.environ.get("NORFACE_RT_CACHE"):
        return Path(os.environ["NORFACE_RT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "norface-rt"


def engine_cache_dir() -> Path:
    """Root of the TensorRT engine cache: ``$NORFACE_RT_ENGINE_CACHE``, else ``<cache>/engines``."""
    env = os.environ.get(ENGINE_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return cache_dir() / "engines"


def packaged_model_dir() -> Path:
    return Path(__file__).resolve().parent / "assets" / "model"


def packaged_landmarker_dir() -> Path:
    """Where the package keeps the MediaPipe bundle it ships (with its manifest and licence)."""
    return Path(__file__).resolve().parent / "assets" / "landmarker"


BUNDLED_MANIFEST = "manifest.json"
BUNDLED_FORMAT = "norface-bundled-files"


def packaged_landmarker() -> Path | None:
    """The landmarker bundle shipped inside the package, after checking its size and sha256
    against the manifest beside it (None when this installation carries none). A file that
    does not match is refused: a damaged install must not analyse with an unknown model."""
    d = packaged_landmarker_dir()
    manifest = d / BUNDLED_MANIFEST
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if data.get("format") != BUNDLED_FORMAT:
        raise ModelNotFoundError(f"{manifest}: expected format {BUNDLED_FORMAT!r}, got "
                                 f"{data.get('format')!r}")
    for name, entry in data["files"].items():
        if not name.endswith(".task"):
            continue
        p = d / name
        if not p.is_file():
            raise ModelNotFoundError(f"{p}: listed in {manifest} but missing (a damaged "
                                     "installation: reinstall norface-rt or pass --landmarker)")
        size = p.stat().st_size
        if size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise ModelNotFoundError(f"{p}: expected {entry['bytes']} bytes with sha256 "
                                     f"{entry['sha256']} (per {manifest}), got {size} bytes "
                                     "with another digest: the file is damaged or was altered "
                                     "(reinstall norface-rt or pass --landmarker)")
        return p
    return None


def resolve_model_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    candidates: list[tuple[str, Path]] = []
    if flag:
        candidates.append(("--model-dir", Path(flag)))
    env = os.environ.get("NORFACE_RT_MODEL_DIR")
    if env:
        candidates.append(("$NORFACE_RT_MODEL_DIR", Path(env)))
    candidates.append(("user cache", cache_dir() / "models" / "norface"))
    candidates.append(("packaged default", packaged_model_dir()))
    if flag:
        # An explicit flag is a promise: do not silently fall back to something else.
        candidates = candidates[:1]
    for _, p in candidates:
        if is_model_dir(p):
            return p
    looked = "\n".join(f"  - {how}: {p}" for how, p in candidates)
    raise ModelNotFoundError(
        f"no Norface model set ({CONFIG_FILE} + {NORMALIZER_FILE} + {CLASSIFIER_FILE}) found. "
        "Looked in:\n" + looked + "\n"
        "Pass --model-dir DIR or set NORFACE_RT_MODEL_DIR. To exercise the plumbing without "
        "trained weights, create an untrained model set with `norface-rt models init-untrained DIR` "
        "(its results are flagged untrained)."
    )


def resolve_landmarker(flag: str | os.PathLike[str] | None = None) -> Path:
    candidates: list[tuple[str, Path]] = []
    if flag:
        candidates.append(("--landmarker", Path(flag)))
    env_file = os.environ.get("NORFACE_RT_LANDMARKER")
    if env_file:
        candidates.append(("$NORFACE_RT_LANDMARKER", Path(env_file)))
    dirs: list[tuple[str, Path]] = []
    if os.environ.get("NORFACE_RT_SHARED_MODELS"):
        dirs.append(("$NORFACE_RT_SHARED_MODELS", Path(os.environ["NORFACE_RT_SHARED_MODELS"])))
    dirs.append(("user cache", cache_dir() / "models"))
    for how, d in dirs:
        for name in LANDMARKER_FILENAMES:
            candidates.append((how, d / name))
    if flag:
        candidates = candidates[:1]
    for _, p in candidates:
        if p.is_file():
            return p
    bundled = None if flag else packaged_landmarker()
    if bundled is not None:
        return bundled
    looked = "\n".join(f"  - {how}: {p}" for how, p in candidates)
    if not flag:
        looked += f"\n  - packaged: {packaged_landmarker_dir()} (not in this installation)"
    raise ModelNotFoundError(
        "MediaPipe face landmarker (.task) not found. Looked in:\n" + looked + "\n"
        "Pass --landmarker FILE, set NORFACE_RT_LANDMARKER, or run `norface-rt models download` "
        f"(fetches {LANDMARKER_URL} and checks its sha256)."
    )
