"""MediaPipe FaceLandmarker wrapper: one per stream, frames in, :class:`Face` objects out.

Everything MediaPipe-specific stays in this module; the rest of the pipeline sees only ``Face``.

Face fields, as produced here:

* ``landmarks`` (478, 3) float32: x, y in frame pixels (OpenCV pixel-centre convention,
  ``x_norm * W - 0.5``), z = MediaPipe's relative depth scaled like x (pixels; smaller is closer to
  the camera, origin near the head centre).
* ``box``: tight bounds of the landmarks, not padded, clipped to the frame ``[0, W-1] x [0, H-1]``.
  The mesh spans upper forehead to chin and ear to ear, so it already covers the whole face.
* ``blendshapes``: MediaPipe's 52 ARKit-style scores (plus ``_neutral``) by category name.
* ``pose``: :func:`norface_rt.faces.pose.head_pose_from_matrix` of the facial transformation matrix.
* ``gaze``: :func:`norface_rt.faces.gaze.gaze_from_landmarks` (iris points and head rotation).
* ``position_mm``: :func:`norface_rt.faces.camera.head_position_mm` of the matrix, in the whole
  frame's camera.
* ``points5``: :func:`norface_rt.faces.align.points5_from_mediapipe`.
* ``confidence``: FaceLandmarker reports no score, so it is measured: the score of MediaPipe's own
  BlazeFace detector (``face_detector.tflite`` inside the same ``.task`` bundle) run on a 128x128
  square crop of side 2x the face box centred on the face, taking the best detection whose centre
  falls inside the face box, 0.0 when there is none. Cropping puts every face at the scale the
  short-range detector was trained for, so the number means the same for small and large faces
  (measured: real faces 0.89-0.95, non-face regions 0.06-0.3). It costs one detector run per face
  (~1 ms on 2 cores); in video mode a face's score is carried while it overlaps (IoU >= 0.5) a face
  of the previous frame and is refreshed every ``confidence_refresh`` frames, so the amortised cost
  is ~1/30 of that. ``confidence_refresh=0`` scores every face on every frame.

More faces than ``max_faces``: each MediaPipe graph is asked for ``max_faces + 1`` faces, the
largest ``max_faces`` are kept and :attr:`Landmarker.faces_cut` says how many were left out, so a
crowded frame is never cut silently. One extra face costs nothing in the common case: in video
mode MediaPipe re-runs its detector only while it tracks fewer faces than asked for, which a
frame with fewer faces than ``max_faces`` already does every frame. The count is a lower bound
(a graph reports at most one face beyond the limit).

Small faces: the bundled detector is BlazeFace *short range*; it finds faces whose width is at least
roughly 1/8 of the frame's long side (a 5-person group photo at 1000x667 yields 1 face). ``tiling``
adds overlapping square windows (side = ``tiling`` x the short side, stride half a window) each run
by its own FaceLandmarker, and merges duplicates (keeping the copy furthest from a window edge);
cost grows with the number of windows. A face found in a window gets its pose from that window's
virtual camera, so off-centre windows bias yaw/pitch by a few degrees.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python.core.base_options import BaseOptions
from mediapipe.tasks.python.vision import (
    FaceDetector,
    FaceDetectorOptions,
    FaceLandmarker,
    FaceLandmarkerOptions,
    RunningMode,
)

from norface_rt.faces.align import points5_from_mediapipe
from norface_rt.faces.camera import head_position_mm
from norface_rt.faces.gaze import GL_TO_CV, gaze_from_landmarks
from norface_rt.faces.pose import head_pose_from_rotation, head_rotation
from norface_rt.faces.tracker import box_iou
from norface_rt.images import check_rgb_image
from norface_rt.types import Face, FramePacket

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive end)

DETECTOR_MEMBER = "face_detector.tflite"
BLENDSHAPES_MEMBER = "face_blendshapes.tflite"


def has_blendshapes(model_path: str | os.PathLike[str]) -> bool:
    """Whether a FaceLandmarker bundle scores blendshapes (models with a geometry input need it)."""
    try:
        with zipfile.ZipFile(model_path) as z:
            return BLENDSHAPES_MEMBER in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
_DETECTOR_INPUT = 128  # BlazeFace short-range input side
_SCORE_CONTEXT = 2.0  # detector crop side / face box side
_DETECTOR_MIN_SCORE = 0.05
_CARRY_IOU = 0.5


class TimestampGuard:
    """Strictly increasing millisecond timestamps for MediaPipe video mode.

    Uses the frame's pts when present, else ``frame_index`` at ``fallback_fps``. When the raw clock
    goes backwards or stalls (a reconnecting RTSP source restarts pts) an offset is added so the
    sequence continues one typical frame step after the last value, keeping MediaPipe's temporal
    filters sane instead of crawling forward 1 ms per frame.
    """

    def __init__(self, fallback_fps: float = 30.0) -> None:
        if not fallback_fps > 0:
            raise ValueError(f"fallback_fps must be > 0, got {fallback_fps}")
        self.fallback_fps = float(fallback_fps)
        self._last: int | None = None
        self._offset = 0
        self._step = max(1, round(1000.0 / self.fallback_fps))

    def next(self, pts: float | None, frame_index: int) -> int:
        if pts is not None and math.isfinite(pts):
            raw = int(round(pts * 1000.0))
        else:
            raw = int(round(frame_index * 1000.0 / self.fallback_fps))
        ts = raw + self._offset
        if self._last is not None:
            if ts <= self._last:
                self._offset += self._last + self._step - ts
                ts = self._last + self._step
            else:
                self._step = max(1, ts - self._last)
        self._last = ts
        return ts


# Tiling's bounds: no window smaller than MIN_TILE_PX (a frame whose short side is smaller is
# not tiled: a face cannot fit a thinner strip), and at most MAX_TILES windows besides the full
# frame (each is a MediaPipe graph of its own), spread further apart when a very long frame
# would need more. Without them a 157-byte 20000x1 PNG asked for 1,249 windows.
MIN_TILE_PX = 64
MAX_TILES = 64


def tile_windows(width: int, height: int, tiling: float | None) -> list[Window]:
    """The full frame, plus overlapping square windows when ``tiling`` is set (see module doc),
    within :data:`MIN_TILE_PX` and :data:`MAX_TILES`."""
    windows: list[Window] = [(0, 0, width, height)]
    if tiling is None or min(width, height) < MIN_TILE_PX:
        return windows
    side = max(MIN_TILE_PX, int(round(min(width, height) * tiling)))
    if side >= max(width, height):
        return windows

    def count(length: int) -> int:
        return 1 if side >= length else math.ceil((length - side) / (side / 2.0)) + 1

    def starts(length: int, n: int) -> list[int]:
        if n == 1:
            return [0]
        return sorted({int(round(i * (length - side) / (n - 1))) for i in range(n)})

    nx, ny = count(width), count(height)
    while nx * ny > MAX_TILES:
        if nx >= ny:
            nx -= 1
        else:
            ny -= 1
    for y in starts(height, ny):
        for x in starts(width, nx):
            win = (x, y, min(width, x + side), min(height, y + side))
            if win != windows[0]:
                windows.append(win)
    return windows


def faces_from_mediapipe(result: Any, width: int, height: int, *,
                         origin: tuple[float, float] = (0.0, 0.0),
                         frame_size: tuple[int, int] | None = None,
                         confidences: Sequence[float] | None = None) -> list[Face]:
    """Convert a ``FaceLandmarkerResult`` computed on a ``width`` x ``height`` image.

    ``origin`` is where that image sits in the frame (tiling) and ``frame_size`` (W, H) the frame
    the box is clipped to (default: the image itself). ``confidences`` defaults to 0.0 ("not
    scored"); :class:`Landmarker` fills in measured scores.
    """
    fw, fh = frame_size if frame_size is not None else (width, height)
    ox, oy = origin
    n = len(result.face_landmarks)
    if confidences is not None and len(confidences) != n:
        raise ValueError(f"confidences must have one entry per face ({n}), got {len(confidences)}")
    faces: list[Face] = []
    for i, lms in enumerate(result.face_landmarks):
        arr = np.array([(p.x, p.y, p.z) for p in lms], dtype=np.float64)
        pts = np.empty_like(arr)
        pts[:, 0] = arr[:, 0] * width + ox - 0.5
        pts[:, 1] = arr[:, 1] * height + oy - 0.5
        pts[:, 2] = arr[:, 2] * width
        x0, y0 = pts[:, :2].min(axis=0)
        x1, y1 = pts[:, :2].max(axis=0)
        box = (float(np.clip(x0, 0, fw - 1)), float(np.clip(y0, 0, fh - 1)),
               float(np.clip(x1, 0, fw - 1)), float(np.clip(y1, 0, fh - 1)))
        blend = None
        if i < len(result.face_blendshapes):
            blend = {c.category_name: float(c.score) for c in result.face_blendshapes[i]}
        pose = gaze = position = None
        if i < len(result.facial_transformation_matrixes):
            matrix = np.asarray(result.facial_transformation_matrixes[i])
            try:
                rotation = head_rotation(matrix)
            except ValueError:
                rotation = None  # degenerate matrix: report "unknown" rather than a wrong angle
            if rotation is not None:
                pose = head_pose_from_rotation(rotation)
                gaze = gaze_from_landmarks(pts, GL_TO_CV @ rotation @ GL_TO_CV)
                position = head_position_mm(matrix, (int(ox), int(oy), int(ox) + width,
                                                     int(oy) + height), (fw, fh))
        landmarks = pts.astype(np.float32)
        faces.append(Face(box=box, confidence=float(confidences[i]) if confidences is not None else 0.0,
                          landmarks=landmarks, points5=points5_from_mediapipe(landmarks),
                          pose=pose, blendshapes=blend, gaze=gaze, position_mm=position))
    return faces


class _DetectorScorer:
    """BlazeFace scores for faces found by the landmarker (see module doc, ``confidence``)."""

    def __init__(self, model_path: Path) -> None:
        try:
            with zipfile.ZipFile(model_path) as z:
                buf = z.read(DETECTOR_MEMBER)
        except (zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"model_path must be a FaceLandmarker .task bundle containing "
                             f"{DETECTOR_MEMBER}, got {model_path} ({e})") from e
        opts = FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=buf),
                                   running_mode=RunningMode.IMAGE,
                                   min_detection_confidence=_DETECTOR_MIN_SCORE)
        self._det = FaceDetector.create_from_options(opts)

    def score(self, image: np.ndarray, box: tuple[float, float, float, float]) -> float:
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0, 1.0) * _SCORE_CONTEXT
        k = _DETECTOR_INPUT / side
        cx, cy = (x0 + x1) * 0.5, (y0 + y1) * 0.5
        c = _DETECTOR_INPUT * 0.5
        m = np.array([[k, 0.0, c - k * cx], [0.0, k, c - k * cy]])
        crop = cv2.warpAffine(image, m, (_DETECTOR_INPUT, _DETECTOR_INPUT), flags=cv2.INTER_AREA
                              if k < 1 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        res = self._det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
        hx, hy = (x1 - x0) * k * 0.5, (y1 - y0) * k * 0.5
        best = 0.0
        for d in res.detections:
            b = d.bounding_box
            dx = b.origin_x + b.width * 0.5 - c
            dy = b.origin_y + b.height * 0.5 - c
            if abs(dx) <= hx and abs(dy) <= hy and d.categories:
                best = max(best, float(d.categories[0].score or 0.0))
        return best

    def close(self) -> None:
        self._det.close()


class Landmarker:
    """Faces of one stream. Not thread-safe: call from the stream's face thread only.

    ``mode="video"`` lets MediaPipe track landmarks between frames (faster, steadier) and needs
    strictly increasing timestamps, guarded by :class:`TimestampGuard`; ``mode="image"`` treats
    every frame independently.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, max_faces: int,
                 mode: Literal["video", "image"] = "video",
                 min_detection_confidence: float = 0.5, min_presence: float = 0.5,
                 min_tracking: float = 0.5, tiling: float | None = None,
                 confidence_refresh: int = 30) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model_path: face landmarker .task file not found: {path}")
        if mode not in ("video", "image"):
            raise ValueError(f"mode must be 'video' or 'image', got {mode!r}")
        if not isinstance(max_faces, int) or max_faces < 1:
            raise ValueError(f"max_faces must be an int >= 1, got {max_faces!r}")
        for name, v in (("min_detection_confidence", min_detection_confidence),
                        ("min_presence", min_presence), ("min_tracking", min_tracking)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if tiling is not None and not 0.2 <= tiling <= 1.0:
            raise ValueError(f"tiling must be None or in [0.2, 1.0] (window side / short side), got {tiling}")
        if not isinstance(confidence_refresh, int) or confidence_refresh < 0:
            raise ValueError(f"confidence_refresh must be an int >= 0, got {confidence_refresh!r}")
        self.model_path = path
        self.mode = mode
        self.max_faces = max_faces
        self.tiling = tiling
        self.confidence_refresh = confidence_refresh
        self._options = dict(
            running_mode=RunningMode.VIDEO if mode == "video" else RunningMode.IMAGE,
            num_faces=max_faces + 1,  # one more than kept: cut faces are counted (faces_cut)
            min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_presence),
            min_tracking_confidence=float(min_tracking),
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._scorer = _DetectorScorer(path)  # first: it names a non-bundle file clearly
        self._windows: list[Window] = []
        self._landmarkers: list[FaceLandmarker] = [self._new_landmarker()]
        self._clock = TimestampGuard()
        self._prev: list[tuple[tuple[float, float, float, float], float, int]] = []
        self._faces_cut = 0
        self._closed = False

    @property
    def faces_cut(self) -> int:
        """Faces the last :meth:`detect` found beyond ``max_faces`` and left out (the smallest)."""
        return self._faces_cut

    def _new_landmarker(self) -> FaceLandmarker:
        opts = FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(self.model_path)),
                                     **self._options)
        return FaceLandmarker.create_from_options(opts)

    def _landmarkers_for(self, width: int, height: int) -> list[FaceLandmarker]:
        windows = tile_windows(width, height, self.tiling)
        if windows != self._windows:
            # The full-frame landmarker (index 0) survives size changes; tile landmarkers track
            # within their window, so a new window layout needs fresh ones.
            for lm in self._landmarkers[1:]:
                lm.close()
            self._landmarkers = self._landmarkers[:1] + [self._new_landmarker()
                                                         for _ in windows[1:]]
            self._windows = windows
        return self._landmarkers

    def detect(self, frame: FramePacket) -> list[Face]:
        """Faces in ``frame`` (no track ids yet: that is the Tracker's job)."""
        if self._closed:
            raise RuntimeError("Landmarker is closed")
        image = check_rgb_image(frame.image, "frame.image")
        height, width = image.shape[:2]
        ts = self._clock.next(frame.pts, frame.frame_index) if self.mode == "video" else 0
        landmarkers = self._landmarkers_for(width, height)
        candidates: list[tuple[float, int, Face]] = []
        for wi, ((x0, y0, x1, y1), lm) in enumerate(zip(self._windows, landmarkers)):
            sub = image if wi == 0 else np.ascontiguousarray(image[y0:y1, x0:x1])
            mp_image = mp.Image(image_format=mp.ImageFormat.SRGB,
                                data=np.ascontiguousarray(sub))
            res = lm.detect_for_video(mp_image, ts) if self.mode == "video" else lm.detect(mp_image)
            for face in faces_from_mediapipe(res, x1 - x0, y1 - y0, origin=(x0, y0),
                                             frame_size=(width, height)):
                candidates.append((_interior_margin(face.box, (x0, y0, x1, y1), width, height),
                                   wi, face))
        faces, self._faces_cut = _merge(candidates, self.max_faces)
        self._score(image, faces)
        return faces

    def _score(self, image: np.ndarray, faces: list[Face]) -> None:
        carry = self.mode == "video" and self.confidence_refresh > 0
        current: list[tuple[tuple[float, float, float, float], float, int]] = []
        for f in faces:
            hit = None
            if carry:
                best = _CARRY_IOU
                for box, score, age in self._prev:
                    iou = box_iou(f.box, box)
                    if iou >= best and age + 1 < self.confidence_refresh:
                        best, hit = iou, (score, age + 1)
            if hit is None:
                hit = (self._scorer.score(image, f.box), 0)
            f.confidence = hit[0]
            current.append((f.box, hit[0], hit[1]))
        self._prev = current

    def score_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> float:
        """The ``confidence`` measure for any box of an RGB image (see module doc)."""
        if self._closed:
            raise RuntimeError("Landmarker is closed")
        return self._scorer.score(image, box)

    def close(self) -> None:
        """Release the MediaPipe graphs; idempotent."""
        if self._closed:
            return
        self._closed = True
        for lm in self._landmarkers:
            lm.close()
        self._landmarkers = []
        self._scorer.close()

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _interior_margin(box: tuple[float, float, float, float], win: Window, width: int,
                     height: int) -> float:
    """Distance (in face sizes) from the box to the nearest window edge that is not a frame edge.

    A face near such an edge may be cut by the window, so duplicates prefer the window where the
    face sits furthest inside; the full frame has no interior edges (infinite margin).
    """
    x0, y0, x1, y1 = win
    size = max(box[2] - box[0], box[3] - box[1], 1.0)
    gaps = []
    if x0 > 0:
        gaps.append(box[0] - x0)
    if y0 > 0:
        gaps.append(box[1] - y0)
    if x1 < width:
        gaps.append(x1 - 1 - box[2])
    if y1 < height:
        gaps.append(y1 - 1 - box[3])
    return min(gaps) / size if gaps else math.inf


def _merge(candidates: list[tuple[float, int, Face]], max_faces: int) -> tuple[list[Face], int]:
    """Drop duplicates found in several windows (IoU >= 0.3 or one box mostly inside the other),
    then keep the ``max_faces`` largest; returns them and how many were cut."""
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i][0], candidates[i][1], i))
    kept: list[Face] = []
    for i in order:
        face = candidates[i][2]
        if all(not _same_face(face.box, k.box) for k in kept):
            kept.append(face)
    cut = max(0, len(kept) - max_faces)
    if cut:
        kept = sorted(kept, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))[:max_faces]
    return kept, cut


def _same_face(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    if box_iou(a, b) >= 0.3:
        return True
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return smaller > 0 and ix * iy / smaller >= 0.7
