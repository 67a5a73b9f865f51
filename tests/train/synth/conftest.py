"""Fixtures for the synthetic-engine tests: the ICT archive, a tiny texture cache, one generator.

Everything heavy is built once per session and kept small: two photos at a 128-px texture tile,
renders at 128 px, crops at 64 px. GL tests skip with the reason when no EGL context can be made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_IDS = ("canada/003f", "composite/f_multi")


@pytest.fixture(scope="session")
def ict_path(shared_dir: Path) -> Path:
    p = shared_dir / "ict" / "ict_facekit_v1.npz"
    if not p.is_file():
        pytest.skip(f"ICT-FaceKit archive not found: {p}")
    return p


@pytest.fixture(scope="session")
def face_model(ict_path: Path):  # noqa: ANN201 - FaceModel
    from train.synth.ict import FaceModel

    return FaceModel(ict_path)


@pytest.fixture(scope="session")
def gl_available() -> None:
    try:
        import moderngl
    except ImportError:
        pytest.skip("moderngl not installed (pip install moderngl)")
    try:
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no headless EGL context ({e}); apt-get install libegl1 libgl1-mesa-dri "
                    "libegl-mesa0")
    ctx.release()


@pytest.fixture(scope="session")
def texture_cache(shared_dir: Path, ict_path: Path, gl_available: None,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.synth.textures import build_texture_cache

    for pid in TEST_IDS:
        if not (shared_dir / "faces" / f"{pid}.tem").is_file():
            pytest.skip(f"face photo template not found: {shared_dir / 'faces' / pid}.tem")
    out = tmp_path_factory.mktemp("synth-textures")
    return build_texture_cache(shared_dir, out, ids=TEST_IDS, tile=128, log=lambda m: None)


@pytest.fixture(scope="session")
def generator(shared_dir: Path, texture_cache: Path) -> Iterator[object]:
    from train.synth.engine import SampleGenerator, SynthSettings

    gen = SampleGenerator(shared_dir, texture_cache, SynthSettings(img_size=64, render_size=128))
    yield gen
    gen.close()
