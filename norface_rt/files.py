"""Small file-level facts every part of the project agrees on: content hashes and safe names.

One place so that a model set, an engine cache entry and a downloaded landmarker are hashed the
same way, and a stream id, an overlay file name and a cache directory are made safe the same way.
"""

from __future__ import annotations

import hashlib
import os
import re

_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (model files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of an in-memory buffer (e.g. an image's pixels, recorded in provenance)."""
    return hashlib.sha256(data).hexdigest()


def slug(text: str, *, sep: str = "-", fallback: str = "stream", lower: bool = False,
         max_len: int | None = None) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (runs of anything else become
    one ``sep``), without leading or trailing punctuation: safe in file names, ZeroMQ topics and
    CSV cells on every platform. ``fallback`` when nothing is left."""
    s = _UNSAFE.sub(sep, text).strip("-._")
    if lower:
        s = s.lower()
    if max_len is not None:
        s = s[:max_len].rstrip("-._")
    return s or fallback
