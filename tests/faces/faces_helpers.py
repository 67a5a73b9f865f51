"""Helpers shared by the faces tests (a uniquely named module: tests/ is not a package)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from norface_rt.types import FramePacket


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        pytest.skip(f"test image not found or unreadable: {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def decode(path: Path, stream_id: str, limit: int | None = None) -> list[FramePacket]:
    """Decode with PyAV directly (no project source involved), keeping the real pts."""
    if not path.is_file():
        pytest.skip(f"test video not found: {path}")
    frames: list[FramePacket] = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if limit is not None and i >= limit:
                break
            frames.append(FramePacket.from_av_frame(frame, stream_id, i))
    return frames


def as_packet(image: np.ndarray, index: int = 0) -> FramePacket:
    return FramePacket(stream_id="img", frame_index=index, image=image, pts=None, capture_time=0.0)
