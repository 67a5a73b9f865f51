"""The camera MediaPipe's face geometry assumes, and metric positions in it (OpenFace's frame).

MediaPipe's facial transformation matrix places its canonical face model (centimetres) in front
of a virtual pinhole camera with a vertical field of view of 63 degrees, looking at the middle of
the image it was given (measured: the model projected with that camera lands on the landmarks
within 3-4 px at 560 px; 62.5-64.5 degrees fit best on three photos). The true camera is
unknown, so distances are as good as that guess (OpenFace guesses too, with fx = 500 px at 640
wide, unless told the intrinsics).

Positions here are OpenFace's: millimetres in OpenCV's camera frame (x right, y down, z away from
the camera), the camera at the origin:

* :func:`head_position_mm`: the head's origin (the canonical model's, about the middle of the
  head) from the matrix; for a window of a frame (tiling), moved into the whole frame's camera
  so that every face of a frame is measured in one camera (``pose_Tx/Ty/Tz``).
* :func:`landmarks_mm`: landmarks back-projected along their pixel rays to their depth, the
  head's depth plus MediaPipe's relative depth in the same scale (``X_i, Y_i, Z_i``).
"""

from __future__ import annotations

import math

import numpy as np

VERTICAL_FOV_DEG = 63.0


def focal_px(height: int) -> float:
    """The focal length in pixels of MediaPipe's virtual camera for an image ``height`` high."""
    return (height / 2.0) / math.tan(math.radians(VERTICAL_FOV_DEG) / 2.0)


def head_position_mm(matrix: np.ndarray, window: tuple[int, int, int, int],
                     frame_size: tuple[int, int]) -> tuple[float, float, float] | None:
    """The head's position (x, y, z mm, OpenCV camera frame) from a facial transformation matrix
    computed on ``window`` (x0, y0, x1, y1) of a frame of ``frame_size`` (W, H); None when the
    matrix puts the head behind the camera."""
    m = np.asarray(matrix, dtype=np.float64)
    tx, ty, tz = (float(v) for v in m[:3, 3])  # centimetres, OpenGL frame (camera looks at -z)
    if not tz < 0 or not all(math.isfinite(v) for v in (tx, ty, tz)):
        return None
    x0, y0, x1, y1 = window
    fw = focal_px(y1 - y0)
    # where the head's origin shows in the frame, in pixels
    u = x0 + (x1 - x0) / 2.0 + fw * tx / -tz
    v = y0 + (y1 - y0) / 2.0 - fw * ty / -tz
    width, height = frame_size
    f = focal_px(height)
    z = -tz * 10.0 * f / fw  # the depth at which the frame's camera sees the face that size
    return ((u - width / 2.0) * z / f, (v - height / 2.0) * z / f, z)


def landmarks_mm(landmarks: np.ndarray, position_mm: tuple[float, float, float],
                 frame_size: tuple[int, int]) -> np.ndarray:
    """(N, 3) landmarks (x, y pixels, z MediaPipe's relative depth in pixel scale) in
    millimetres in the camera frame, back-projected at the head's depth plus their own."""
    pts = np.asarray(landmarks, dtype=np.float64)
    width, height = frame_size
    f = focal_px(height)
    zh = float(position_mm[2])
    z = zh + pts[:, 2] * zh / f  # a pixel at the head's depth spans zh / f millimetres
    out = np.empty((pts.shape[0], 3), dtype=np.float64)
    # landmarks are in pixel-centre coordinates (x_norm * W - 0.5): the image centre is (W-1)/2
    out[:, 0] = (pts[:, 0] - (width - 1) / 2.0) * z / f
    out[:, 1] = (pts[:, 1] - (height - 1) / 2.0) * z / f
    out[:, 2] = z
    return out
