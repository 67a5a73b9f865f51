"""Typed hand-offs between pipeline stages.

One dataclass per hand-off: sources emit :class:`FramePacket` (or :class:`EndOfStream`), the face
stage turns a frame into a :class:`FaceFrame` (tracked faces plus aligned crops), a backend
answers a batch of crops with a :class:`ModelOutput`, and the model stage turns a face frame and
its rows of the output into a :class:`FrameResult` (:meth:`FrameResult.from_face_frame`,
:meth:`FaceResult.from_output`), which becomes a wire message (:meth:`FrameResult.to_wire`,
:mod:`norface_rt.wire`) for the sinks. Conversion from PyAV / MediaPipe / backend types happens
only in ``from_*`` constructors at the edges.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from norface_rt.config import DEFAULT_AU_INTENSITY_MAX, ModelConfig
from norface_rt.wire.messages import (
    EosMessage,
    FaceMessage,
    FrameMessage,
    GazeMessage,
    Pose,
    wire_landmarks,
)


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

    def to_wire(self, seq: int, *, emit_time: float | None = None,
                sink_losses: Mapping[str, int] | None = None) -> EosMessage:
        """The stream's ``eos`` message; ``seq`` continues its frame sequence, ``sink_losses``
        are the messages each output has lost so far."""
        return EosMessage(
            stream_id=self.stream_id, seq=seq, frames=self.frames, dropped_frames=self.dropped,
            error=self.error, emit_time=time.time() if emit_time is None else emit_time,
            skipped_frames=self.skipped, skipped_frame_indices=self.skipped_indices,
            lost_frames=self.lost, outage_s=self.outage_s, reconnects=self.reconnects,
            sink_losses=sink_losses)


@dataclass(slots=True)
class HeadPose:
    """Head rotation in degrees (camera looking at the subject: yaw left/right, pitch up/down)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, slots=True)
class Gaze:
    """Eye gaze in OpenFace 2.2's conventions (:mod:`norface_rt.faces.gaze`): unit vectors in
    OpenCV's camera frame (x right, y down, z away from the camera) of the eye leftmost in the
    image (``eye_0``) and the other (``eye_1``), and ``angle_x`` / ``angle_y`` (radians) of their
    mean: > 0 looking towards image right / down, 0 / 0 looking into the camera. ``pupil_0`` /
    ``pupil_1``: where those eyes' iris centres are in the frame (pixels), to draw from."""

    eye_0: tuple[float, float, float]
    eye_1: tuple[float, float, float]
    angle_x: float
    angle_y: float
    pupil_0: tuple[float, float] = (0.0, 0.0)
    pupil_1: tuple[float, float] = (0.0, 0.0)


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
    # Why its numbers deserve less trust (set by the face stage: norface_rt.faces.quality).
    quality: FaceQuality | None = None
    gaze: Gaze | None = None
    # The head's position in millimetres, OpenCV camera frame (norface_rt.faces.camera).
    position_mm: tuple[float, float, float] | None = None


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

    @classmethod
    def failed(cls, frame: FramePacket) -> FaceFrame:
        """The face frame of a frame without faces to analyse: one the source could not decode,
        or one the face stage failed on (the frame travels on, flagged, with no faces)."""
        return cls(frame=frame, faces=[], crops=np.zeros((0, 1, 1, 3), np.uint8))


@dataclass
class ModelOutput:
    """A backend's answer for a batch of crops, row i belonging to crop i. ``normalized`` is None
    unless requested.

    ``timings`` maps stage -> seconds spent on the whole batch: ``{normalize, classify}`` when the
    backend ran the two networks separately, ``{infer}`` when it ran one combined graph, empty
    when nothing ran (N = 0). Divide by ``len(self)`` for a per-face figure.
    """

    normalized: np.ndarray | None  # (N, S, S, 3) uint8 RGB
    au_prob: np.ndarray  # (N, A) float32 in [0, 1]
    au_intensity: np.ndarray  # (N, A) float32 in [0, cfg.au_intensity_max]
    emotion_prob: np.ndarray  # (N, E) float32, rows sum to 1
    timings: Timings = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.au_prob.shape[0])

    @classmethod
    def empty(cls, cfg: ModelConfig, want_normalized: bool = False) -> ModelOutput:
        """The result for zero faces (nothing runs)."""
        s, a, e = cfg.img_size, len(cfg.au_names), len(cfg.emotion_names)
        return cls(
            normalized=np.zeros((0, s, s, cfg.in_chans), np.uint8) if want_normalized else None,
            au_prob=np.zeros((0, a), np.float32),
            au_intensity=np.zeros((0, a), np.float32),
            emotion_prob=np.zeros((0, e), np.float32),
        )


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
    gaze: Gaze | None = None
    # The head's position (x, y, z millimetres, OpenCV camera frame: norface_rt.faces.camera);
    # not on the wire, written by the OpenFace-style CSV (pose_Tx/Ty/Tz, X_i/Y_i/Z_i).
    position_mm: tuple[float, float, float] | None = None

    @classmethod
    def from_output(cls, face: Face, out: ModelOutput, row: int, cfg: ModelConfig) -> FaceResult:
        """The result of ``face`` from row ``row`` of a backend's output, labelled with the
        model's names."""
        emo = out.emotion_prob[row]
        return cls(
            track_id=face.track_id, box=face.box, confidence=face.confidence, pose=face.pose,
            au_occurrence=dict(zip(cfg.au_names, map(float, out.au_prob[row]))),
            au_intensity=dict(zip(cfg.au_names, map(float, out.au_intensity[row]))),
            emotions=dict(zip(cfg.emotion_names, map(float, emo))),
            top_emotion=cfg.emotion_names[int(np.argmax(emo))], model_id=str(cfg.model_id),
            landmarks=face.landmarks, blendshapes=face.blendshapes, quality=face.quality,
            gaze=face.gaze, position_mm=face.position_mm)

    def to_wire(self, *, landmarks: bool = False, blendshapes: bool = False) -> FaceMessage:
        """This face as a frame message carries it; ``landmarks`` / ``blendshapes`` add those
        optional fields."""
        return FaceMessage(
            track_id=self.track_id, box=self.box, confidence=self.confidence,
            pose=None if self.pose is None else Pose(self.pose.yaw, self.pose.pitch,
                                                     self.pose.roll),
            au_occurrence=self.au_occurrence, au_intensity=self.au_intensity,
            emotions=self.emotions, top_emotion=self.top_emotion, model_id=self.model_id,
            quality=None if self.quality is None else self.quality.issues,
            landmarks=(wire_landmarks(self.landmarks)
                       if landmarks and self.landmarks is not None else None),
            blendshapes=self.blendshapes if blendshapes else None,
            gaze=None if self.gaze is None else GazeMessage(
                self.gaze.eye_0, self.gaze.eye_1, self.gaze.angle_x, self.gaze.angle_y,
                self.gaze.pupil_0, self.gaze.pupil_1))

    def to_dict(self, *, landmarks: bool = False, blendshapes: bool = False) -> dict[str, Any]:
        """The face's dict in a frame message."""
        return self.to_wire(landmarks=landmarks, blendshapes=blendshapes).to_dict()

    @classmethod
    def from_message(cls, face: Mapping[str, Any]) -> FaceResult:
        """A face of a received frame message (a JSONL line's): what the message carries;
        ``position_mm`` never travels, and ``landmarks`` / ``blendshapes`` / ``gaze`` only when
        the producer sent them."""
        pose, quality, gaze = face.get("pose"), face.get("quality"), face.get("gaze")
        lms = face.get("landmarks")
        return cls(
            track_id=int(face["track_id"]), box=tuple(float(v) for v in face["box"]),  # type: ignore[arg-type]
            confidence=float(face["confidence"]),
            pose=None if pose is None else HeadPose(pose["yaw"], pose["pitch"], pose["roll"]),
            au_occurrence=dict(face["au_occurrence"]), au_intensity=dict(face["au_intensity"]),
            emotions=dict(face["emotions"]), top_emotion=face["top_emotion"],
            model_id=face["model_id"],
            landmarks=None if lms is None else np.asarray(lms, dtype=np.float32),
            blendshapes=None if face.get("blendshapes") is None else dict(face["blendshapes"]),
            quality=None if quality is None else FaceQuality(tuple(quality["issues"])),
            gaze=None if gaze is None else Gaze(
                tuple(gaze["eye_0"]), tuple(gaze["eye_1"]),
                gaze["angle_x"], gaze["angle_y"],
                tuple(gaze.get("pupil_0", (0.0, 0.0))),
                tuple(gaze.get("pupil_1", (0.0, 0.0)))))


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

    @classmethod
    def from_face_frame(cls, ff: FaceFrame, faces: list[FaceResult], cfg: ModelConfig, *,
                        error: str | None, keep_image: bool) -> FrameResult:
        """The result of a face frame whose faces were analysed into ``faces`` (its ``seq`` is
        given when it is published); ``keep_image`` keeps the pixels for sinks that draw."""
        fr = ff.frame
        return cls(
            stream_id=fr.stream_id, seq=-1, frame_index=fr.frame_index, pts=fr.pts,
            capture_time=fr.capture_time, width=fr.width, height=fr.height, dropped=fr.dropped,
            skipped=fr.skipped, lost=fr.lost, faces=faces, untrained=not bool(cfg.trained),
            timings=dict(fr.timings), error=error,
            image=fr.image if keep_image and fr.error is None else None,
            au_intensity_max=cfg.au_intensity_max, source=fr.source, faces_cut=ff.faces_cut)

    def to_wire(self, *, landmarks: bool = False, blendshapes: bool = False) -> FrameMessage:
        """The ``frame`` message; ``landmarks`` / ``blendshapes`` add those optional face
        fields. ``emit_time`` is now when it was not set."""
        return FrameMessage(
            stream_id=self.stream_id, seq=self.seq, frame_index=self.frame_index, pts=self.pts,
            capture_time=self.capture_time,
            emit_time=self.emit_time if self.emit_time is not None else time.time(),
            width=self.width, height=self.height, dropped_frames=self.dropped,
            skipped_frames=self.skipped, lost_frames=self.lost, untrained=self.untrained,
            error=self.error,
            timings_ms={str(k): float(v) * 1000.0 for k, v in self.timings.items()},
            faces=tuple(f.to_wire(landmarks=landmarks, blendshapes=blendshapes)
                        for f in self.faces),
            faces_cut=self.faces_cut, source=self.source,
            au_intensity_max=self.au_intensity_max)

    def to_message(self, *, landmarks: bool = False, blendshapes: bool = False) -> dict[str, Any]:
        """The ``frame`` message dict (:meth:`to_wire`'s)."""
        return self.to_wire(landmarks=landmarks, blendshapes=blendshapes).to_dict()

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> FrameResult:
        """The result a received ``frame`` message (a dict or a typed message) describes, for
        code that works on results (tables of a JSONL file): timings back in seconds."""
        return cls(
            stream_id=msg["stream_id"], seq=int(msg["seq"]), frame_index=int(msg["frame_index"]),
            pts=msg["pts"], capture_time=float(msg["capture_time"]), width=int(msg["width"]),
            height=int(msg["height"]), dropped=int(msg["dropped_frames"]),
            faces=[FaceResult.from_message(f) for f in msg["faces"]],
            untrained=bool(msg["untrained"]),
            timings={Stage(k) if k in Stage._value2member_map_ else k: float(v) / 1000.0
                     for k, v in msg["timings_ms"].items()},
            emit_time=msg.get("emit_time"), error=msg.get("error"),
            au_intensity_max=float(msg.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX)),
            source=msg.get("source"), faces_cut=int(msg.get("faces_cut", 0)),
            skipped=int(msg.get("skipped_frames", 0)), lost=int(msg.get("lost_frames", 0)))
