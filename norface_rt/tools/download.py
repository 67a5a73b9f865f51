"""Fetching the MediaPipe face landmarker, pinned by sha256.

This is the only network access the project makes, and only on an explicit user command; the
file is verified before it is moved into place, so a truncated or substituted download is never used.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from pathlib import Path

from norface_rt.files import sha256_file
from norface_rt.paths import LANDMARKER_SHA256, LANDMARKER_URL, cache_dir


def download_landmarker(dest_dir: Path | None = None, *, url: str = LANDMARKER_URL,
                        sha256: str = LANDMARKER_SHA256, timeout: float = 60.0) -> Path:
    dest_dir = Path(dest_dir) if dest_dir else cache_dir() / "models"
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / url.rsplit("/", 1)[-1]
    if target.is_file() and sha256_file(target) == sha256:
        return target
    fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".part")
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except OSError as exc:
            raise RuntimeError(f"could not download {url}: {exc}. Download it by hand and pass "
                               "--landmarker FILE or set NORFACE_RT_LANDMARKER.") from exc
        got = sha256_file(Path(tmp))
        if got != sha256:
            raise RuntimeError(f"sha256 mismatch for {url}: expected {sha256}, got {got}; not used")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
