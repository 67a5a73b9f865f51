"""Fixtures shared by tests/ and benchmarks/: where the data beside the repository lives.

Third-party data is read from ``$NORFACE_RT_SHARED`` (default ``<repo>/../shared``) and never
committed. A missing file skips the test with the path it looked for, so the reason is visible.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


def _shared_root() -> Path:
    return Path(os.environ.get("NORFACE_RT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"shared data directory not found: {root} (set NORFACE_RT_SHARED)")
    return root


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    d = shared_dir / "media"
    if not d.is_dir():
        pytest.skip(f"test media not found: {d}")
    return d


@pytest.fixture(scope="session")
def landmarker_path(shared_dir: Path) -> Path:
    p = shared_dir / "models" / "face_landmarker_v2_with_blendshapes.task"
    if not p.is_file():
        pytest.skip(f"MediaPipe face landmarker not found: {p}")
    return p
