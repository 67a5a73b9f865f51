"""Test-only fixtures (the shared-data fixtures live in the repository's root conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model set, exported through the real export path."""
    from norface_rt.export import init_untrained

    return Path(init_untrained(tmp_path_factory.mktemp("model-tiny"), size="tiny", seed=0))
