"""Backend tests run on the suite's shared untrained tiny model set (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def model_dir(tiny_model_dir: Path) -> Path:
    """Read-only: tests that need to alter a model set copy it first."""
    return tiny_model_dir


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
