"""Benchmark fixtures: the default-size model set and the shared media.

Speed targets are measured here with pytest-benchmark (medians over rounds), never asserted in
timed unit tests. Until trained weights ship, the default-size model is exported untrained: the
graph (and so the speed) is the same as a trained one's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = Path(os.environ.get("NORFACE_RT_SHARED", REPO.parent / "shared")).resolve()
    if not (root / "media").is_dir():
        pytest.skip(f"shared data not found at {root} (set NORFACE_RT_SHARED)")
    return root


@pytest.fixture(scope="session")
def landmarker_path(shared_dir: Path) -> Path:
    p = shared_dir / "models" / "face_landmarker_v2_with_blendshapes.task"
    if not p.is_file():
        pytest.skip(f"MediaPipe face landmarker not found: {p}")
    return p


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model users get: the packaged default if present, else the default size, untrained."""
    from norface_rt.config import ModelConfig
    from norface_rt.export import init_untrained
    from norface_rt.paths import packaged_model_dir

    if (packaged_model_dir() / "norface.onnx").is_file():
        return packaged_model_dir()
    return Path(init_untrained(tmp_path_factory.mktemp("model-default"),
                               size=ModelConfig().size, seed=0))
