"""The face stage: frame -> tracked faces -> aligned crops, with per-stage timings.

Edge cases, by design:
* No faces: ``faces == []`` and ``crops`` of shape (0, S, S, 3); nothing downstream special-cases it.
* Small faces (inter-ocular distance below ``SMALL_FACE_IOD`` = 24 px): kept. Their crops are
  upsampled and blurry, so AU estimates are less reliable; consumers can filter on the box or
  ``points5`` (the stage reports, it does not censor). :func:`interocular` gives the distance.
* Extreme pose (profile): kept. The similarity fit of five points never degenerates for a real
  mesh; the crop is simply more distorted, and ``pose`` tells consumers why.
"""

from __future__ import annotations

import time

import numpy as np

from norface_rt.faces.align import Aligner
from norface_rt.faces.landmarker import Landmarker
from norface_rt.faces.tracker import Tracker
from norface_rt.types import FaceFrame, FramePacket, Stage

SMALL_FACE_IOD = 24.0


def interocular(points5: np.ndarray) -> float:
    """Distance in pixels between the two eye points of a ``points5`` array."""
    p = np.asarray(points5, dtype=np.float64)
    return float(np.linalg.norm(p[1] - p[0]))


class FaceStage:
    """Runs landmarker, tracker and aligner for one stream; owns the landmarker (close())."""

    def __init__(self, landmarker: Landmarker, tracker: Tracker, aligner: Aligner,
                 warp_crops: bool = True) -> None:
        self.landmarker = landmarker
        self.tracker = tracker
        self.aligner = aligner
        # False when the backend warps on its own device: only the matrices are computed here.
        self.warp_crops = warp_crops

    def process(self, frame: FramePacket) -> FaceFrame:
        """``timings[Stage.DETECT]`` covers landmarks, confidence and tracking; ``[Stage.ALIGN]``
        the crops (or only their matrices when the backend warps them)."""
        t0 = time.perf_counter()
        faces = self.tracker.update(self.landmarker.detect(frame))
        t1 = time.perf_counter()
        points = [f.points5 for f in faces]
        if self.warp_crops:
            crops, mats = self.aligner.align(frame.image, points)
        else:
            s = self.aligner.size
            crops = np.zeros((0, s, s, 3), np.uint8)
            mats = (np.stack([self.aligner.matrix_for_points(p) for p in points]) if points
                    else np.zeros((0, 2, 3), np.float64))
        t2 = time.perf_counter()
        frame.timings[Stage.DETECT] = t1 - t0
        frame.timings[Stage.ALIGN] = t2 - t1
        return FaceFrame(frame=frame, faces=faces, crops=crops, matrices=mats)

    def close(self) -> None:
        self.landmarker.close()
