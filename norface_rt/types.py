"""Typed hand-offs between pipeline stages.

One dataclass per hand-off: sources emit :class:`FramePacket` (or :class:`EndOfStream`), the face
stage turns a frame into a :class:`FaceFrame` (tracked faces plus aligned crops), the model stage
turns that into a :class:`FrameResult`, which sinks serialise. Conversion from PyAV / MediaPipe /
backend types happens only in ``from_*`` constructors at the edges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from norface_rt.config import DEFAULT_AU_INTENSITY_MAX, SCHEMA_VERSION


class Stage(StrEnum):
    """Names of the timed stages, in pipeline order: the keys of every ``timings`` dict, of the
    wire protocol's ``timings_ms`` and of the stats messages (str-valued, so they travel as the
    plain strings consumers already read).

    ``normalize`` + ``classify`` are reported when a backend runs the two networks apart,
    ``infer`` when it runs one combined graph; ``queue`` is the wait for the inference batch,
    ``latency`` capture-to-publish wall time.
    """

    DECODE = "decode"
    DETECT = "detect"
    ALIGN = "align"
    QUEUE = "queue"
    NORMALIZE = "normalize"
    CLASSIFY = "classify"
    INFER = "infer"
    PUBLISH = "publish"
    LATENCY = "latency"


Timings = dict[Stage, float]  # stage -> seconds


@dataclass(slots=True)
class FramePacket:
    """One decoded frame. ``image`` is HxWx3 uint8 RGB, C-contiguous."""

    stream_id: str
    frame_index: int
    image: np.ndarray
    pts: float | None  # presentation time in seconds (None when the container has none)
    capture_time: float  # wall-clock time.time() when the frame left the decoder
    live: bool = False
    dropped: int = 0  # frames this stream has dropped so far (live sources only)
    # Frames of this stream so far that could not be decoded (skipped), or, live, that never
    # arrived while the connection was down (lost); their indices are missing from frame_index.
    skipped: int = 0
    lost: int = 0
    timings: Timings = field(default_factory=dict)
    # The file this frame came from, for sources of several files (image folders); None otherwise.
    source: str | None = None
    # Why this frame has no pixels (an unreadable file in a folder): it still travels, flagged,
    # so frame indices keep counting files; ``image`` is then empty (0x0x3).
    error: str | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_av_frame(cls, frame: Any, stream_id: str, frame_index: int, *, live: bool = False,
                      dropped: int = 0) -> FramePacket:
        """Convert a ``av.VideoFrame``; pts is converted to seconds through its time base.

        A display matrix (phones store portrait video sideways and say so, ``frame.rotation``) is
        applied here, so every later stage -- detection, boxes, overlay -- sees the frame upright
        and ``width``/``height`` are the displayed ones."""
        image = upright(frame.to_ndarray(format="rgb24"), int(getattr(frame, "rotation", 0) or 0))
        pts = None
        if frame.pts is not None and frame.time_base is not None:
            pts = float(frame.pts * frame.time_base)
        return cls(stream_id=stream_id, frame_index=frame_index, image=np.ascontiguousarray(image),
                   pts=pts, capture_time=time.time(), live=live, dropped=dropped)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """``image`` turned by ``rotation`` degrees counter-clockwise (FFmpeg's display-matrix angle,
    PyAV's ``VideoFrame.rotation``), rounded to a quarter turn; unchanged for 0."""
    k = round(rotation / 90.0) % 4
    return image if k == 0 else np.ascontiguousarray(np.rot90(image, k=k))


# EndOfStream lists at most this many skipped frame indices (the count is always exact).
MAX_LISTED_SKIPS = 10_000


@dataclass(slots=True)
class EndOfStream:
    """Explicit end of a stream: ``error`` is None for a clean end, else what went wrong.

    ``skipped`` frames could not be decoded (their indices, up to :data:`MAX_LISTED_SKIPS`, in
    ``skipped_indices``); ``lost`` frames never arrived from a live source while it was
    disconnected for ``outage_s`` seconds in all, over ``reconnects`` re-connections."""

    stream_id: str
    frames: int
    dropped: int = 0
    error: str | None = None
    skipped: int = 0
    skipped_indices: tuple[int, ...] = ()
    lost: int = 0
    outage_s: float = 0.0
    reconnects: int = 0


@dataclass(slots=True)
class HeadPose:
    """Head rotation in degrees (camera looking at the subject: yaw left/right, pitch up/down)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(slots=True)
class Face:
    """One detected face in image pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    confidence: float
    landmarks: np.ndarray  # (N, 3) x, y in pixels, z relative depth (MediaPipe: N=478)
    points5: np.ndarray  # (5, 2) alignment points, same order as ModelConfig.template
    pose: HeadPose | None = None
    blendshapes: dict[str, float] | None = None
    track_id: int = -1


@dataclass(slots=True)
class FaceFrame:
    """A frame with its tracked faces, their aligned crops (N, S, S, 3) uint8 RGB and the
    image->crop matrices (N, 2, 3) that made them.

    When the backend aligns on its own device (``device_align``), the face stage leaves the
    crops out (shape (0, S, S, 3)) and only the matrices travel: the frame is uploaded once
    and warped there instead of copying N crops per frame."""

    frame: FramePacket
    faces: list[Face]
    crops: np.ndarray
    matrices: np.ndarray | None = None
    # (N, G) float32 geometry input of each face, for models that consume one (config
    # geometry_inputs), already corrected by the stream's per-track baseline; None otherwise.
    geometry: np.ndarray | None = None
    # Faces found beyond the landmarker's max_faces and left out (a lower bound: the landmarker
    # looks for one face more than it keeps).
    faces_cut: int = 0


@dataclass(slots=True, frozen=True)
class FaceQuality:
    """Why a face's numbers deserve less trust; no issue means a usable face.

    The issue names and their thresholds are owned by :mod:`norface_rt.faces.quality`."""

    issues: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "issues": list(self.issues)}


# Landmarks travel rounded to this many decimals (0.1 px: finer than MediaPipe's jitter), as
# [[x, y, z], ...]: about 10 KB of JSON per face instead of 29 KB at full precision.
LANDMARK_DECIMALS = 1


@dataclass(slots=True)
class FaceResult:
    """One face's analysis: what the Python API returns and what a frame message's face holds.

    ``landmarks`` (478, 3) float32 and ``blendshapes`` (MediaPipe's 52 scores, ``_neutral`` included)
    are always kept here; messages carry them only when asked (``--landmarks``,
    ``--blendshapes``), as they are most of a message's size."""

    track_id: int
    box: tuple[float, float, float, float]
    confidence: float
    pose: HeadPose | None
    au_occurrence: dict[str, float]
    au_intensity: dict[str, float]
    emotions: dict[str, float]
    top_emotion: str
    model_id: str
    landmarks: np.ndarray | None = None
    blendshapes: dict[str, float] | None = None
    quality: FaceQuality | None = None

    def to_dict(self, *, landmarks: bool = False, blendshapes: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "track_id": int(self.track_id),
            "box": [float(v) for v in self.box],
            "confidence": float(self.confidence),
            "pose": None if self.pose is None else {
                "yaw": float(self.pose.yaw), "pitch": float(self.pose.pitch),
                "roll": float(self.pose.roll)},
            "au_occurrence": {k: float(v) for k, v in self.au_occurrence.items()},
            "au_intensity": {k: float(v) for k, v in self.au_intensity.items()},
            "emotions": {k: float(v) for k, v in self.emotions.items()},
            "top_emotion": self.top_emotion,
            "model_id": self.model_id,
        }
        if self.quality is not None:
            d["quality"] = self.quality.to_dict()
        if landmarks and self.landmarks is not None:
            d["landmarks"] = np.round(np.asarray(self.landmarks, np.float64),
                                      LANDMARK_DECIMALS).tolist()
        if blendshapes and self.blendshapes is not None:
            d["blendshapes"] = {str(k): float(v) for k, v in self.blendshapes.items()}
        return d


@dataclass(slots=True)
class FrameResult:
    """Everything published for one frame (the ``frame`` message of the wire schema)."""

    stream_id: str
    seq: int  # per-stream message sequence number, starting at 0
    frame_index: int
    pts: float | None
    capture_time: float
    width: int
    height: int
    dropped: int
    faces: list[FaceResult]
    untrained: bool
    timings: Timings = field(default_factory=dict)
    emit_time: float | None = None
    error: str | None = None  # set when this frame could not be analysed (e.g. inference failed)
    image: np.ndarray | None = None  # kept only when a sink (overlay) needs pixels
    # The model's AU intensity scale (ModelConfig.au_intensity_max); sent only when it is not the
    # default, so messages of standard models are unchanged on the wire.
    au_intensity_max: float = DEFAULT_AU_INTENSITY_MAX
    source: str | None = None  # the file of this frame (image folders); see FramePacket.source
    faces_cut: int = 0  # faces found beyond --max-faces and left out (see FaceFrame.faces_cut)
    skipped: int = 0  # FramePacket.skipped
    lost: int = 0  # FramePacket.lost

    def to_message(self, *, landmarks: bool = False, blendshapes: bool = False) -> dict[str, Any]:
        """The ``frame`` message; ``landmarks`` / ``blendshapes`` add those optional face fields."""
        msg: dict[str, Any] = {
            "type": "frame",
            "schema_version": SCHEMA_VERSION,
            "stream_id": self.stream_id,
            "seq": int(self.seq),
            "frame_index": int(self.frame_index),
            "pts": None if self.pts is None else float(self.pts),
            "capture_time": float(self.capture_time),
            "emit_time": float(self.emit_time if self.emit_time is not None else time.time()),
            "width": int(self.width),
            "height": int(self.height),
            "dropped_frames": int(self.dropped),
            "skipped_frames": int(self.skipped),
            "lost_frames": int(self.lost),
            "untrained": bool(self.untrained),
            "error": self.error,
            "timings_ms": {str(k): float(v) * 1000.0 for k, v in self.timings.items()},
            "faces": [f.to_dict(landmarks=landmarks, blendshapes=blendshapes) for f in self.faces],
            "faces_cut": int(self.faces_cut),
        }
        if self.source is not None:
            msg["source"] = self.source
        if self.au_intensity_max != DEFAULT_AU_INTENSITY_MAX:
            msg["au_intensity_max"] = float(self.au_intensity_max)
        return msg
