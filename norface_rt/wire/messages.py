"""The three messages as frozen types: what sinks receive and what a reader can decode into.

Each type owns its wire layout: field names, their order, which optional fields are sent, and
the schema version (:meth:`to_dict` builds the dict that is encoded; :meth:`from_dict` validates
a received dict and reads it back). Producers build them from the pipeline's results at the edge
(:meth:`norface_rt.types.FrameResult.to_wire`, :meth:`norface_rt.types.EndOfStream.to_wire`,
:meth:`StatsMessage.from_snapshot`).

Every message is also a read-only mapping of its wire dict (``msg["faces"]``, ``msg.get(...)``),
so code written against the message dicts of earlier versions keeps working; new code reads the
typed fields (``msg.faces[0].emotions``) and dispatches with ``isinstance``. Fields a newer
producer adds are kept in ``extra`` and written back by :meth:`to_dict`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np

from norface_rt.config import DEFAULT_AU_INTENSITY_MAX
from norface_rt.wire.names import STATS_TOPIC
from norface_rt.wire.schema import SCHEMA_MINOR, SCHEMA_VERSION, ProtocolError, fail, validate

_NOTHING: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False, kw_only=True)
class WireMessage(Mapping[str, Any]):
    """Base of the message types: the schema version they carry, the read-only mapping view of
    :meth:`to_dict`, and the topic.

    Subclasses are frozen dataclasses; the wire dict is built once, on first use, and shared by
    every sink that reads it (treat it as read-only; ``copy.deepcopy`` it to change a copy).
    """

    kind: ClassVar[str]  # the wire's "type" field
    schema_version: int = SCHEMA_VERSION
    # Compatible additions within the version (absent: 0); 1 added a face's gaze.
    schema_minor: int = SCHEMA_MINOR
    _wire: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def _build(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Validate a received dict of this type and read it (fields a version 1 producer does
        not send take their version 2 defaults; unknown fields are kept in ``extra``)."""
        return cls._read(validate(_checked_type(d, cls.kind)))

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> Self:
        """Read a dict that :func:`~norface_rt.wire.schema.validate` accepted."""
        raise NotImplementedError

    @classmethod
    def known_fields(cls) -> frozenset[str]:
        """The wire fields this version knows (the rest of a received message is ``extra``)."""
        return _known(cls) | {"type"}

    def to_dict(self) -> dict[str, Any]:
        """The wire dict of this message (built once; the codec encodes it as it is)."""
        built = self._wire
        if built is None:
            built = self._build()
            object.__setattr__(self, "_wire", built)
        return built

    @property
    def topic(self) -> str:
        """The ZeroMQ topic (and NATS subject token) of this message."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


# Landmarks travel rounded to this many decimals (0.1 px: finer than MediaPipe's jitter), as
# [[x, y, z], ...]: about 10 KB of JSON per face instead of 29 KB at full precision.
LANDMARK_DECIMALS = 1


def wire_landmarks(points: np.ndarray) -> list[list[float]]:
    """(N, 3) landmarks as a face message carries them: ``[[x, y, z], ...]``, rounded."""
    return np.round(np.asarray(points, np.float64), LANDMARK_DECIMALS).tolist()


class Pose(NamedTuple):
    """Head rotation in degrees, as a face message carries it."""

    yaw: float
    pitch: float
    roll: float


# Gaze travels rounded to this many decimals (OpenFace writes its vectors with 6).
GAZE_DECIMALS = 6


class GazeMessage(NamedTuple):
    """Eye gaze as a face message carries it (schema 2.1): unit vectors of the eye leftmost in
    the image and the other, OpenCV camera frame, and the angles of their mean in radians
    (:class:`norface_rt.types.Gaze`)."""

    eye_0: Sequence[float]
    eye_1: Sequence[float]
    angle_x: float
    angle_y: float
    pupil_0: Sequence[float]  # [x, y] of that eye's iris centre in the frame (pixels)
    pupil_1: Sequence[float]

    def to_dict(self) -> dict[str, Any]:
        return {"eye_0": [round(float(v), GAZE_DECIMALS) for v in self.eye_0],
                "eye_1": [round(float(v), GAZE_DECIMALS) for v in self.eye_1],
                "angle_x": round(float(self.angle_x), GAZE_DECIMALS),
                "angle_y": round(float(self.angle_y), GAZE_DECIMALS),
                "pupil_0": [round(float(v), LANDMARK_DECIMALS) for v in self.pupil_0],
                "pupil_1": [round(float(v), LANDMARK_DECIMALS) for v in self.pupil_1]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GazeMessage:
        return cls(tuple(d["eye_0"]), tuple(d["eye_1"]), d["angle_x"], d["angle_y"],
                   tuple(d["pupil_0"]), tuple(d["pupil_1"]))


def _floats(values: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items()}


def _known(cls: type) -> frozenset[str]:
    """A message type's wire field names: its dataclass fields, which are named as on the wire."""
    return frozenset(f.name for f in fields(cls) if f.name != "extra" and not f.name.startswith("_"))


def _extra(d: Mapping[str, Any], known: frozenset[str]) -> Mapping[str, Any]:
    extra = {k: v for k, v in d.items() if k not in known}
    return MappingProxyType(extra) if extra else _NOTHING


@dataclass(frozen=True, slots=True, eq=False)
class FaceMessage:
    """One face of a frame message (``faces[i]``); see docs/protocol.md for each field (the
    fields are named as on the wire; :meth:`to_dict` writes them in the wire's order)."""

    # which model says what about which tracked face
    model_id: str
    track_id: int
    top_emotion: str
    emotions: Mapping[str, float]
    au_occurrence: Mapping[str, float]
    au_intensity: Mapping[str, float]
    # where the face is and how it is turned
    box: tuple[float, float, float, float]
    confidence: float
    pose: Pose | None
    # Optional fields of schema version 2 (None: not sent).
    quality: tuple[str, ...] | None = None  # the issues: () = a usable face
    landmarks: Sequence[Sequence[float]] | None = None  # [[x, y, z], ...] as sent
    blendshapes: Mapping[str, float] | None = None
    gaze: GazeMessage | None = None  # schema 2.1
    extra: Mapping[str, Any] = field(default_factory=lambda: _NOTHING)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "track_id": int(self.track_id),
            "box": [float(v) for v in self.box],
            "confidence": float(self.confidence),
            "pose": None if self.pose is None else {
                "yaw": float(self.pose.yaw), "pitch": float(self.pose.pitch),
                "roll": float(self.pose.roll)},
            "au_occurrence": _floats(self.au_occurrence),
            "au_intensity": _floats(self.au_intensity),
            "emotions": _floats(self.emotions),
            "top_emotion": self.top_emotion,
            "model_id": self.model_id,
        }
        if self.quality is not None:
            d["quality"] = {"ok": not self.quality, "issues": list(self.quality)}
        if self.landmarks is not None:
            d["landmarks"] = self.landmarks
        if self.blendshapes is not None:
            d["blendshapes"] = _floats(self.blendshapes)
        if self.gaze is not None:
            d["gaze"] = self.gaze.to_dict()
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FaceMessage:
        """A face of a frame message that :func:`~norface_rt.wire.schema.validate` accepted."""
        pose = d["pose"]
        quality = d.get("quality")
        gaze = d.get("gaze")
        return cls(
            track_id=d["track_id"], box=tuple(d["box"]),
            confidence=d["confidence"],
            pose=None if pose is None else Pose(pose["yaw"], pose["pitch"], pose["roll"]),
            au_occurrence=d["au_occurrence"], au_intensity=d["au_intensity"],
            emotions=d["emotions"], top_emotion=d["top_emotion"], model_id=d["model_id"],
            quality=None if quality is None else tuple(quality["issues"]),
            landmarks=d.get("landmarks"), blendshapes=d.get("blendshapes"),
            gaze=None if gaze is None else GazeMessage.from_dict(gaze),
            extra=_extra(d, _known(cls)))


@dataclass(frozen=True, slots=True, eq=False)
class StreamMessage(WireMessage):
    """A message of one stream (``frame``, ``eos``): its stream id, which is its topic, and its
    place in the stream's sequence. Fields a newer producer added are kept in ``extra``."""

    stream_id: str
    seq: int
    extra: Mapping[str, Any] = field(default_factory=lambda: _NOTHING, kw_only=True)

    @property
    def topic(self) -> str:
        return self.stream_id

    def _build(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.kind, "schema_version": self.schema_version,
                             "schema_minor": self.schema_minor, "stream_id": self.stream_id,
                             "seq": int(self.seq), **self._body()}
        d.update(self.extra)
        return d

    def _body(self) -> dict[str, Any]:
        """The fields after ``seq``, in the wire's order."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True, eq=False)
class FrameMessage(StreamMessage):
    """Everything published for one frame (``type: frame``)."""

    frame_index: int
    pts: float | None
    capture_time: float
    emit_time: float
    width: int
    height: int
    dropped_frames: int
    skipped_frames: int
    lost_frames: int
    untrained: bool
    error: str | None
    timings_ms: Mapping[str, float]
    faces: tuple[FaceMessage, ...]
    faces_cut: int = 0
    source: str | None = None  # sent only when set (image folders)
    # The model's AU intensity scale; sent only when it is not the FACS default.
    au_intensity_max: float = DEFAULT_AU_INTENSITY_MAX

    kind: ClassVar[str] = "frame"

    def _body(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "frame_index": int(self.frame_index),
            "pts": None if self.pts is None else float(self.pts),
            "capture_time": float(self.capture_time),
            "emit_time": float(self.emit_time),
            "width": int(self.width),
            "height": int(self.height),
            "dropped_frames": int(self.dropped_frames),
            "skipped_frames": int(self.skipped_frames),
            "lost_frames": int(self.lost_frames),
            "untrained": bool(self.untrained),
            "error": self.error,
            "timings_ms": _floats(self.timings_ms),
            "faces": [f.to_dict() for f in self.faces],
            "faces_cut": int(self.faces_cut),
        }
        if self.source is not None:
            d["source"] = self.source
        if self.au_intensity_max != DEFAULT_AU_INTENSITY_MAX:
            d["au_intensity_max"] = float(self.au_intensity_max)
        return d

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            stream_id=d["stream_id"], seq=d["seq"], frame_index=d["frame_index"], pts=d["pts"],
            capture_time=d["capture_time"], emit_time=d["emit_time"], width=d["width"],
            height=d["height"], dropped_frames=d["dropped_frames"],
            skipped_frames=d.get("skipped_frames", 0), lost_frames=d.get("lost_frames", 0),
            untrained=d["untrained"], error=d["error"], timings_ms=d["timings_ms"],
            faces=tuple(FaceMessage.from_dict(f) for f in d["faces"]),
            faces_cut=d.get("faces_cut", 0), source=d.get("source"),
            au_intensity_max=d.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX),
            schema_version=d["schema_version"], schema_minor=d.get("schema_minor", 0),
            extra=_extra(d, cls.known_fields()))


@dataclass(frozen=True, slots=True, eq=False)
class EosMessage(StreamMessage):
    """The end of one stream (``type: eos``), after its last frame; ``seq`` continues the
    stream's frame sequence."""

    frames: int
    dropped_frames: int
    error: str | None
    emit_time: float
    skipped_frames: int = 0
    skipped_frame_indices: tuple[int, ...] = ()
    lost_frames: int = 0
    outage_s: float = 0.0
    reconnects: int = 0
    # Messages each output had lost by then (buffer full or write failed); None: not sent.
    sink_losses: Mapping[str, int] | None = None

    kind: ClassVar[str] = "eos"

    def _body(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "frames": int(self.frames),
            "dropped_frames": int(self.dropped_frames),
            "error": None if self.error is None else str(self.error),
            "emit_time": float(self.emit_time),
            "skipped_frames": int(self.skipped_frames),
            "skipped_frame_indices": [int(i) for i in self.skipped_frame_indices],
            "lost_frames": int(self.lost_frames),
            "outage_s": float(self.outage_s),
            "reconnects": int(self.reconnects),
        }
        if self.sink_losses is not None:
            d["sink_losses"] = {str(k): int(v) for k, v in self.sink_losses.items()}
        return d

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            stream_id=d["stream_id"], seq=d["seq"], frames=d["frames"],
            dropped_frames=d["dropped_frames"], error=d["error"], emit_time=d["emit_time"],
            skipped_frames=d.get("skipped_frames", 0),
            skipped_frame_indices=tuple(d.get("skipped_frame_indices", ())),
            lost_frames=d.get("lost_frames", 0), outage_s=d.get("outage_s", 0.0),
            reconnects=d.get("reconnects", 0), sink_losses=d.get("sink_losses"),
            schema_version=d["schema_version"], schema_minor=d.get("schema_minor", 0),
            extra=_extra(d, cls.known_fields()))


@dataclass(frozen=True, slots=True, eq=False)
class StatsMessage(WireMessage):
    """Pipeline statistics (``type: stats``): the collector's payload (``fps``, ``stages``,
    ``streams``, ``sinks``, ...) as it was when the message was made, in its order."""

    payload: Mapping[str, Any]
    emit_time: float

    kind: ClassVar[str] = "stats"

    @property
    def topic(self) -> str:
        return STATS_TOPIC

    @property
    def fps(self) -> float:
        return float(self.payload["fps"])

    @property
    def stages(self) -> Mapping[str, Mapping[str, float]]:
        """Stage name -> ``p50_ms``, ``p95_ms``, ``count`` (and ``mean_ms``)."""
        return self.payload["stages"]

    @property
    def streams(self) -> Mapping[str, Mapping[str, Any]]:
        """Stream id -> its counters and state."""
        return self.payload["streams"]

    @property
    def sinks(self) -> Mapping[str, Mapping[str, Any]]:
        """Output name -> its counters ({} when the producer sends none)."""
        return self.payload.get("sinks", {})

    @classmethod
    def from_snapshot(cls, payload: Mapping[str, Any], *,
                      emit_time: float | None = None) -> StatsMessage:
        """Wrap a collector's snapshot (:meth:`norface_rt.stats.StageStats.snapshot`), validated.

        The payload is copied (numbers coerced to plain Python types), so later changes by the
        collector cannot alter a message already handed to a sink; extra keys (``elapsed_s``,
        ``frames``, ...) are kept."""
        if not isinstance(payload, Mapping):
            fail("stats payload", "map with stages, fps, streams", payload)
        plain = {k: _plain(v) for k, v in payload.items()
                 if k not in ("type", "schema_version", "schema_minor", "emit_time")}
        msg = cls(plain, float(time.time() if emit_time is None else emit_time))
        validate(msg.to_dict())
        return msg

    def _build(self) -> dict[str, Any]:
        d = dict(self.payload)
        d["type"] = self.kind
        d["schema_version"] = self.schema_version
        d["schema_minor"] = self.schema_minor
        d["emit_time"] = float(self.emit_time)
        return d

    @classmethod
    def _read(cls, d: Mapping[str, Any]) -> Self:
        payload = {k: v for k, v in d.items()
                   if k not in ("type", "schema_version", "schema_minor", "emit_time")}
        return cls(payload, d["emit_time"], schema_version=d["schema_version"],
                   schema_minor=d.get("schema_minor", 0))


Message = FrameMessage | EosMessage | StatsMessage
_TYPES: dict[str, type[FrameMessage] | type[EosMessage] | type[StatsMessage]] = {
    t.kind: t for t in (FrameMessage, EosMessage, StatsMessage)}


def _checked_type(d: Mapping[str, Any], kind: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        d = dict(d)
    if d.get("type") != kind:
        raise ProtocolError(f"type: expected {kind!r}, got {d.get('type')!r:.80}")
    return d


def message_from_dict(d: Mapping[str, Any]) -> Message:
    """The typed message of a received dict, validated (:class:`ProtocolError` otherwise)."""
    return read_message(validate(dict(d) if isinstance(d, Mapping) else d))


def read_message(d: Mapping[str, Any]) -> Message:
    """The typed message of a dict :func:`~norface_rt.wire.schema.validate` has accepted (the
    codec decodes and validates, then reads with this, checking each message once)."""
    return _TYPES[d["type"]]._read(d)


def as_message(msg: WireMessage | Mapping[str, Any]) -> Message:
    """``msg`` itself when it is a typed message, else the message dict read (and validated) by
    :func:`message_from_dict`: what a sink's ``write`` accepts from code written against the
    dict messages of earlier versions."""
    if isinstance(msg, (FrameMessage, EosMessage, StatsMessage)):
        return msg
    return message_from_dict(msg)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers, containers copied (msgpack only packs plain types)."""
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if hasattr(v, "item"):  # numpy scalar
        return v.item()
    return v
