"""Face boxes for the teachers, made from MediaPipe's landmarks.

Each teacher was trained on crops cut by its own face detector, so it must see the box that
detector would give: a box too tight or too loose changes what it reads. The harness finds faces
with MediaPipe (as the runtime does) and derives each teacher's box from the 478 landmarks with a
:class:`BoxRule`: centre and size relative to the landmarks' extent (all 478 points, not clipped
to the image, so a face cut by the border keeps its true size).

How the constants were chosen (``python -m train.teachers.fit_boxes``): the teacher's own detector
was run on permissive photos (``../shared/faces``: the London set's training people, Canada,
composites; ``../shared/media`` stills) and its boxes were matched to MediaPipe's faces; each
constant is the median over those faces. ``fer``'s detector is OpenCV's frontal-face Haar cascade
with fer's settings; face-api's box is the ``alignedRect`` of its pipeline ``detectAllFaces(SSD
MobileNet v1).withFaceLandmarks().withFaceExpressions()``: the 68 landmarks' extent padded by 20 %.
Nothing was fitted on ``../shared/eval/real_val``; the real_val figures in docs/training.md
only check that the port and the rule reproduce each teacher's published yardstick (calibration of
the port, not training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.teachers.base import Box


def landmark_extent(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): bounds of MediaPipe's landmarks (N, >=2) in pixels, not clipped."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] < 2:
        raise ValueError(f"landmarks must be (N, 2) or (N, 3) pixels, got shape {pts.shape}")
    if not np.isfinite(pts[:, :2]).all():
        raise ValueError("landmarks contain non-finite values")
    x0, y0 = pts[:, :2].min(0)
    x1, y1 = pts[:, :2].max(0)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"landmarks span no area: x {x0}..{x1}, y {y0}..{y1}")
    return float(x0), float(y0), float(x1), float(y1)


@dataclass(frozen=True)
class BoxRule:
    """Teacher box from the landmark extent (width w, height h, centre cx, cy):
    centre (cx + dx w, cy + dy h), size (sw w, sh h); ``square`` makes it a square of side
    ``sw * w`` (a detector with square boxes; ``sh`` is then unused).

    ``frame`` = (a, b) models a detector whose boxes cannot leave the image (a sliding-window
    detector such as the Haar cascade): when the face fills much of the frame its box shrinks, so
    the side is ``min(sw w, a w + b S)`` with S the image's shorter side, and the box is shifted
    (not shrunk) to lie inside the image.

    ``version`` goes into the label cache's key: change it with any constant.
    """

    name: str
    dx: float
    dy: float
    sw: float
    sh: float
    square: bool
    version: int
    fitted_on: str
    frame: tuple[float, float] | None = None

    def box(self, landmarks: np.ndarray, image_shape: tuple[int, ...] | None = None) -> Box:
        x0, y0, x1, y1 = landmark_extent(landmarks)
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 + self.dx * w, (y0 + y1) / 2 + self.dy * h
        bw = self.sw * w
        if self.frame is not None:
            if image_shape is None:
                raise ValueError(f"box rule {self.name} depends on the image size: pass "
                                 "image_shape")
            bw = min(bw, self.frame[0] * w + self.frame[1] * min(image_shape[:2]))
        bh = bw if self.square else self.sh * h
        if self.frame is not None and image_shape is not None:
            cx = _inside(cx, bw, image_shape[1])
            cy = _inside(cy, bh, image_shape[0])
        return Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)

    def describe(self) -> str:
        size = (f"square of side {self.sw:.3f} w" if self.square
                else f"{self.sw:.3f} w x {self.sh:.3f} h")
        if self.frame is not None:
            size += (f", at most {self.frame[0]:.3f} w + {self.frame[1]:.3f} S (S the image's "
                     "shorter side) and kept inside the image")
        return (f"{self.name} v{self.version}: MediaPipe landmark extent (w x h) -> centre shifted "
                f"by ({self.dx:+.3f} w, {self.dy:+.3f} h), {size}; medians of {self.fitted_on}")


def _inside(c: float, size: float, limit: int) -> float:
    """Centre ``c`` moved so that a box of ``size`` lies within [0, limit] where it fits."""
    if size >= limit:
        return limit / 2
    return min(max(c, size / 2), limit - size / 2)


# Fitted by ``python -m train teachers fit-boxes`` on 186 permissive photos (136 London training
# people's neutral and smiling photos, 40 Canada, 10 composites, 4 media stills; every face
# matched). Medians, with the interquartile ranges in the comments.
FIT_SET = "186 permissive photos (London training people, Canada, composites, media stills)"
# OpenCV's Haar cascade as fer runs it: square, centred 8.7 % of the extent's height above its
# centre (IQR -0.098..-0.071), side 1.209 extent widths (IQR 1.170..1.240); dx -0.001 (IQR
# -0.012..+0.009) is taken as 0.
# When the face fills the frame (tight crops, the training shards' aligned crops) the cascade's
# windows cannot grow past the image and its box shrinks: on the same photos cut to 350 px
# squares with the face 0.7, 0.8 and 0.9 of the width (grey, as most real_val images), the median
# side was 0.754, 0.796 and 0.834 S, i.e. 0.40 w + 0.474 S. (``fit-boxes`` cuts the crops from
# photos first downscaled to 800 px and prints 0.384 w + 0.487 S; the two lines differ by under
# 0.003 S for faces 0.7-0.9 of the frame.)
FER_BOX_RULE = BoxRule(name="fer-haar", dx=0.0, dy=-0.087, sw=1.209, sh=1.209, square=True,
                       version=3, fitted_on=FIT_SET + "; frame limit from their tight crops",
                       frame=(0.40, 0.474))
# face-api's alignedRect (68-landmark extent + 20 %): dx -0.019 (IQR -0.027..-0.013), dy +0.052
# (IQR 0.043..0.057), width 1.223 (IQR 1.210..1.235), height 0.953 (IQR 0.931..0.970). The small
# leftward shift is kept: it is consistent across faces (face-api's 68-point jaw line is not
# symmetric about MediaPipe's mesh).
FACEAPI_BOX_RULE = BoxRule(name="faceapi-aligned", dx=-0.019, dy=0.052, sw=1.223, sh=0.953,
                           square=False, version=2, fitted_on=FIT_SET)
