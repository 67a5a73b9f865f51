"""Backend tests run on the suite's shared untrained tiny model set (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the 2 shared cores are busy, and spinning thread pools then stall.
    Opt in per module (torch is imported lazily so ORT-only tests never load it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
