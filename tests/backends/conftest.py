"""One untrained tiny model set per test session, exercised by every backend test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from norface_rt.export import init_untrained


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_untrained(tmp_path_factory.mktemp("modelset"), size="tiny", seed=0)


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
