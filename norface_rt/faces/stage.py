"""The face stage: frame -> tracked faces -> aligned crops, with per-stage timings.

Edge cases, by design:
* No faces: ``faces == []`` and ``crops`` of shape (0, S, S, 3); nothing downstream special-cases it.
* Small faces (inter-ocular distance below ``SMALL_FACE_IOD`` = 24 px): kept. Their crops are
  upsampled and blurry, so AU estimates are less reliable; each result carries a quality flag
  (:mod:`norface_rt.faces.quality`) so consumers can filter (the stage reports, it does not
  censor).
* Extreme pose (profile): kept. The similarity fit of five points never degenerates for a real
  mesh; the crop is simply more distorted; ``pose`` and the quality flag tell consumers why.
* More faces than ``max_faces``: the landmarker keeps the largest and says how many it left out
  (``FaceFrame.faces_cut``).
* Stills (``stills=True``: photos, image folders): unrelated pictures, so each one's faces are
  numbered afresh from 0 (a tracker would match faces of unrelated photos by their position).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from norface_rt.faces.align import Aligner
from norface_rt.faces.geometry import TrackBaseline, blendshape_vector
from norface_rt.faces.quality import SMALL_FACE_IOD, assess, interocular
from norface_rt.faces.tracker import Tracker
from norface_rt.types import Face, FaceFrame, FramePacket, Stage

__all__ = ["SMALL_FACE_IOD", "FaceFinder", "FaceStage", "GeometryReader", "interocular"]


class FaceFinder(Protocol):
    """What the stage needs of a landmarker: :class:`~norface_rt.faces.landmarker.Landmarker`
    (MediaPipe), or landmarks found earlier and replayed (a benchmark on a machine without
    MediaPipe). A protocol, so this module does not import MediaPipe."""

    @property
    def faces_cut(self) -> int:
        """Faces the last :meth:`detect` found beyond its limit and left out."""
        ...

    def detect(self, frame: FramePacket) -> list[Face]:
        """The faces of ``frame``, without track ids."""
        ...

    def close(self) -> None:
        """Release what it holds; idempotent."""
        ...


class GeometryReader:
    """Each face's geometry input for a model (its blendshapes in the config's order), moved by a
    per-track baseline when the stream is a video (:class:`TrackBaseline`)."""

    def __init__(self, names: Sequence[str], baseline: TrackBaseline | None = None) -> None:
        if not names:
            raise ValueError("names: expected the model's blendshape names, got none")
        self.names = tuple(names)
        self.baseline = baseline

    def read(self, faces: Sequence[Face]) -> np.ndarray:
        rows = []
        for f in faces:
            v = blendshape_vector(f.blendshapes, self.names)
            rows.append(v if self.baseline is None else self.baseline.apply(f.track_id, v))
        return np.stack(rows) if rows else np.zeros((0, len(self.names)), np.float32)


class FaceStage:
    """Runs landmarker, tracker and aligner for one stream; owns the landmarker (close()).

    With a ``geometry`` reader (models with a geometry input) every face frame also carries the
    faces' geometry vectors."""

    def __init__(self, landmarker: FaceFinder, tracker: Tracker, aligner: Aligner,
                 warp_crops: bool = True, geometry: GeometryReader | None = None,
                 stills: bool = False) -> None:
        self.landmarker = landmarker
        self.tracker = tracker
        self.stills = stills
        self.aligner = aligner
        # False when the backend warps on its own device: only the matrices are computed here.
        self.warp_crops = warp_crops
        self.geometry = geometry

    def process(self, frame: FramePacket) -> FaceFrame:
        """``timings[Stage.DETECT]`` covers landmarks, confidence, tracking and each face's
        quality flags; ``[Stage.ALIGN]`` the crops (or only their matrices when the backend warps
        them)."""
        t0 = time.perf_counter()
        if self.stills:
            self.tracker = Tracker()  # every picture's faces from 0: see the module doc
        faces = self.tracker.update(self.landmarker.detect(frame))
        for face in faces:
            face.quality = assess(face)
        geometry = None if self.geometry is None else self.geometry.read(faces)
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
        return FaceFrame(frame=frame, faces=faces, crops=crops, matrices=mats, geometry=geometry,
                         faces_cut=self.landmarker.faces_cut)

    def close(self) -> None:
        self.landmarker.close()
