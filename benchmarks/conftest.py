"""Benchmark fixtures: the default-size model set (shared-data fixtures: root conftest.py).

Speed targets are measured here with pytest-benchmark (medians over rounds), never asserted in
timed unit tests. ``pytest benchmarks --benchmark-disable`` runs every benchmark once as a smoke
test: pytest-benchmark then keeps no statistics, so figures come from
``bench_helpers.median_seconds``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model users get: the packaged default if present, else the default size, untrained;
    ``$NORFACE_RT_BENCH_MODEL_DIR`` benchmarks another model set instead (e.g. two model versions
    side by side, one run each, alternating)."""
    from norface_rt.config import ModelConfig
    from norface_rt.export import init_untrained
    from norface_rt.model_set import is_model_dir
    from norface_rt.paths import packaged_model_dir

    other = os.environ.get("NORFACE_RT_BENCH_MODEL_DIR")
    if other:
        if not is_model_dir(Path(other)):
            raise pytest.UsageError(f"NORFACE_RT_BENCH_MODEL_DIR={other} is not a model set")
        return Path(other)
    if is_model_dir(packaged_model_dir()):
        return packaged_model_dir()
    return Path(init_untrained(tmp_path_factory.mktemp("model-default"),
                               size=ModelConfig().size, seed=0))
