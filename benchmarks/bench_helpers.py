"""Helpers shared by the benchmarks: timings that survive ``--benchmark-disable``, and the frames
of the five-face clip (the pipeline benchmark encodes them as a video, the GPU kit stores them as
JPEG frames)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def timed(fn: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    """``fn`` that also appends its own wall time to ``times`` (read by :func:`median_seconds`)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - t0)

    return wrapper


def median_seconds(benchmark: Any, times: list[float]) -> float:
    """pytest-benchmark's median, or with ``--benchmark-disable`` (no stats kept) the median of
    the runs :func:`timed` recorded."""
    if benchmark.stats is not None:
        return float(benchmark.stats.stats.median)
    return statistics.median(times)


# ---------------------------------------------------------------------------- five faces per frame

MULTI_FRAMES = 48
MULTI_SIZE = (1280, 720)  # W, H
_CELL = 340  # each face crop is scaled to CELL x CELL; 3 on the top row, 2 below
_CROP = 1.7  # crop side / face box side: faces end up ~200 px wide, well above the short-range
#             detector's ~1/8 of the long side (160 px), so no tiling is needed


def _face_boxes(image: np.ndarray, landmarker: Path) -> list[tuple[float, float, float, float]]:
    """The 5 faces of the group photo, found once with tiling (they are too small without)."""
    from norface_rt.faces.landmarker import Landmarker
    from norface_rt.types import FramePacket

    with Landmarker(landmarker, max_faces=8, mode="image", tiling=0.5) as lm:
        faces = lm.detect(FramePacket("photo", 0, image, None, 0.0))
    boxes = sorted((f.box for f in faces), key=lambda b: b[0])
    assert len(boxes) == 5, f"expected the 5 faces of multi_face.jpg, found {len(boxes)}"
    return boxes


def _square_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, _CROP * max(x1 - x0, y1 - y0) / 2
    pad = int(math.ceil(half)) + 1
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    xa, ya = int(round(cx - half)) + pad, int(round(cy - half)) + pad
    side = int(round(2 * half))
    return cv2.resize(padded[ya:ya + side, xa:xa + side], (_CELL, _CELL),
                      interpolation=cv2.INTER_CUBIC)


def five_face_frames(photo: Path, landmarker: Path) -> list[np.ndarray]:
    """48 RGB frames, 1280x720: the 5 people of ``photo`` (multi_face.jpg) enlarged and slowly
    panned. The whole group moves ~2 px per frame (a slow camera pan) so MediaPipe's video mode
    has to track real motion rather than a still image."""
    import cv2

    bgr = cv2.imread(str(photo))
    if bgr is None:
        raise FileNotFoundError(f"photo: not found or not readable: {photo}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    crops = [_square_crop(image, b) for b in _face_boxes(image, landmarker)]
    w, h = MULTI_SIZE
    frames = []
    for i in range(MULTI_FRAMES):
        frame = np.full((h, w, 3), 96, np.uint8)
        bx = 20 + int(round(90 * i / (MULTI_FRAMES - 1)))  # 20..110; grid is 1020 wide
        by = int(round(20 + 18 * math.sin(2 * math.pi * i / MULTI_FRAMES)))  # 2..38 of 40
        cells = [(bx + k * _CELL, by) for k in range(3)] + \
                [(bx + _CELL // 2 + k * _CELL, by + _CELL) for k in range(2)]
        for crop, (x, y) in zip(crops, cells):
            frame[y:y + _CELL, x:x + _CELL] = crop
        frames.append(frame)
    return frames
