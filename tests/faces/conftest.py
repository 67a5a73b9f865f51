"""Fixtures for the faces tests: real media decoded once per session, one image-mode landmarker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faces_helpers import decode
from norface_rt.types import FramePacket


@pytest.fixture(scope="session")
def single_face_frames(media_dir: Path) -> list[FramePacket]:
    return decode(media_dir / "single_face.mp4", "single")


@pytest.fixture(scope="session")
def image_landmarker(landmarker_path: Path) -> Iterator[object]:
    from norface_rt.faces.landmarker import Landmarker

    lm = Landmarker(landmarker_path, mode="image", max_faces=8)
    yield lm
    lm.close()
