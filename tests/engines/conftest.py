"""Engine tests: CPU tests run everywhere; tests marked ``tensorrt`` need TensorRT and a CUDA GPU
(engine_helpers.gpu_skip_reason says why they skip)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def engine_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private engine cache root; $NORFACE_RT_ENGINE_CACHE points at it so nothing touches
    the user's cache."""
    root = tmp_path / "engine-cache"
    monkeypatch.setenv("NORFACE_RT_ENGINE_CACHE", str(root))
    return root
