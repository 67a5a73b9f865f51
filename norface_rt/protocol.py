"""The wire protocol: message shapes, msgpack encoding, validation and ZeroMQ topic framing.

Three message types travel on the wire (see ``docs/protocol.md`` and ``docs/schema/*.json``):

``frame``  one per analysed frame and stream (built by :meth:`FrameResult.to_message`)
``eos``    one per stream, after its last frame (:func:`eos_message`)
``stats``  periodic pipeline statistics (:func:`stats_message`)

Every ZeroMQ message is two frames: ``[topic, payload]``. The topic is the stream id (UTF-8) for
``frame``/``eos`` and :data:`STATS_TOPIC` for ``stats``; the payload is one msgpack map. Stream ids
starting with ``_`` are reserved for such service topics, so a subscriber to ``_stats`` never
receives a stream's frames by ZeroMQ's prefix matching.

The validator here is hand-written rather than jsonschema-driven: it runs on every message in the
publish thread and in every listener, so it must be cheap and must not add a runtime dependency.
It enforces the same rules as the JSON Schemas (the tests check both against the same messages),
plus two cross-field rules a schema cannot express (topic matches the message; ``top_emotion`` is
one of ``emotions``).

Schema version 2 added optional fields (a frame's ``source`` and ``faces_cut``; a face's
``quality``, ``landmarks`` and ``blendshapes``) and frames of undecodable files (``width`` =
``height`` = 0 with an ``error``); see ``docs/protocol.md``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import msgpack

from norface_rt.config import (
    AU_NAMES,
    DEFAULT_AU_INTENSITY_MAX,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
)
from norface_rt.types import EndOfStream

# Where `norface-rt run` publishes and `norface-rt listen` subscribes unless told otherwise
# (loopback only: binding anything wider is an explicit choice, see sinks/zmq_pub.py).
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
STATS_TOPIC = "_stats"
MESSAGE_TYPES = ("frame", "eos", "stats")
# A payload larger than this is refused by decode() before unpacking (a frame with 64 faces is ~40 KB).
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
_AU_KEY = re.compile(r"AU[0-9]{2}")
_KNOWN_AUS = frozenset(AU_NAMES)
_STREAM_INT_COUNTERS = ("frames", "faces", "dropped_frames", "skipped_frames", "lost_frames",
                        "reconnects")
_STREAM_TEXT = ("state", "last_error")  # stats streams: connection state and last error (text)
_SINK_INT_COUNTERS = ("written", "dropped", "failed", "queued")


class ProtocolError(ValueError):
    """A message is not valid protocol: the text names the field and expected vs actual value."""


# --------------------------------------------------------------------------- small checkers
def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _fail(path: str, expected: str, actual: Any) -> NoReturn:
    shown = repr(actual)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise ProtocolError(f"{path}: expected {expected}, got {shown} ({_tname(actual)})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _int(d: Mapping[str, Any], key: str, path: str, minimum: int = 0) -> None:
    v = _get(d, key, path)
    if not _is_int(v) or v < minimum:
        _fail(f"{path}{key}", f"integer >= {minimum}", v)


def _num(d: Mapping[str, Any], key: str, path: str, lo: float | None = None,
         hi: float | None = None, nullable: bool = False) -> None:
    v = _get(d, key, path)
    if v is None and nullable:
        return
    _check_num(v, f"{path}{key}", lo, hi, nullable)


def _check_num(v: Any, where: str, lo: float | None, hi: float | None,
               nullable: bool = False) -> None:
    ok = _is_num(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = ("finite number" if lo is None and hi is None else
               f"number >= {lo}" if hi is None else
               f"number <= {hi}" if lo is None else f"number in [{lo}, {hi}]")
        _fail(where, rng + (" or null" if nullable else ""), v)


def _str(d: Mapping[str, Any], key: str, path: str, nullable: bool = False,
         nonempty: bool = False) -> None:
    v = _get(d, key, path)
    if v is None and nullable:
        return
    if not isinstance(v, str) or (nonempty and not v):
        _fail(f"{path}{key}", ("non-empty string" if nonempty else "string")
              + (" or null" if nullable else ""), v)


def _get(d: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise ProtocolError(f"{path}{key}: required field missing "
                            f"(present: {sorted(map(str, d))[:20]})")
    return d[key]


def _map(d: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    v = _get(d, key, path)
    if not isinstance(v, dict):
        _fail(f"{path}{key}", "map", v)
    for k in v:
        if not isinstance(k, str):
            _fail(f"{path}{key} key", "string", k)
    return v


def _num_map(d: Mapping[str, Any], key: str, path: str, lo: float | None, hi: float | None,
             au_keys: bool = False) -> None:
    m = _map(d, key, path)
    lo_ = -math.inf if lo is None else lo
    hi_ = math.inf if hi is None else hi
    for k, v in m.items():
        # Fast path first: this loop runs for every AU of every face of every frame.
        if au_keys and k not in _KNOWN_AUS and not _AU_KEY.fullmatch(k):
            _fail(f"{path}{key} key", "an AU name like 'AU12' (AU + two digits)", k)
        if type(v) is float and lo_ <= v <= hi_ and v != math.inf and v != -math.inf:
            continue
        _check_num(v, f"{path}{key}.{k}", lo, hi)


def _stream_id(d: Mapping[str, Any], path: str = "") -> None:
    _str(d, "stream_id", path, nonempty=True)
    if d["stream_id"].startswith("_"):
        _fail(f"{path}stream_id", "a stream id not starting with '_' (reserved for service "
              "topics such as '_stats')", d["stream_id"])


# --------------------------------------------------------------------------- per-type validators
def _validate_face(face: Any, path: str, au_intensity_max: float) -> None:
    if not isinstance(face, dict):
        _fail(path.rstrip("."), "map (a face)", face)
    tid = _get(face, "track_id", path)
    if not _is_int(tid) or tid < -1:
        _fail(f"{path}track_id", "integer >= -1 (-1 = not tracked)", tid)
    box = _get(face, "box", path)
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_num(b) for b in box):
        _fail(f"{path}box", "[x0, y0, x1, y1] of 4 finite numbers", box)
    _num(face, "confidence", path, 0.0, 1.0)
    pose = _get(face, "pose", path)
    if pose is not None:
        if not isinstance(pose, dict):
            _fail(f"{path}pose", "map {yaw, pitch, roll} or null", pose)
        for k in ("yaw", "pitch", "roll"):
            _num(pose, k, f"{path}pose.", -180.0, 180.0)
    _num_map(face, "au_occurrence", path, 0.0, 1.0, au_keys=True)
    _num_map(face, "au_intensity", path, 0.0, au_intensity_max, au_keys=True)
    _num_map(face, "emotions", path, 0.0, 1.0)
    _str(face, "top_emotion", path)
    if face["emotions"] and face["top_emotion"] not in face["emotions"]:
        _fail(f"{path}top_emotion", f"one of {sorted(face['emotions'])}", face["top_emotion"])
    _str(face, "model_id", path)
    # Optional fields of schema version 2.
    if "quality" in face:
        q = face["quality"]
        if (not isinstance(q, dict) or not isinstance(q.get("ok"), bool)
                or not isinstance(q.get("issues"), list)
                or not all(isinstance(i, str) for i in q["issues"])):
            _fail(f"{path}quality", "map {ok: boolean, issues: list of strings}", q)
    if "landmarks" in face:
        lms = face["landmarks"]
        if not isinstance(lms, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 3 and all(_is_num(c) for c in p)
                for p in lms):
            _fail(f"{path}landmarks", "list of [x, y, z] triples of finite numbers", lms)
    if "blendshapes" in face:
        _num_map(face, "blendshapes", path, 0.0, 1.0)


def _validate_frame(msg: Mapping[str, Any]) -> None:
    _stream_id(msg)
    _int(msg, "seq", "")
    _int(msg, "frame_index", "")
    _num(msg, "pts", "", nullable=True)
    _num(msg, "capture_time", "", 0.0)
    _num(msg, "emit_time", "", 0.0)
    # 0 x 0 only for a frame that could not be decoded (error set; schema version 2).
    _int(msg, "width", "", 0)
    _int(msg, "height", "", 0)
    _int(msg, "dropped_frames", "")
    _optional_ints(msg, ("skipped_frames", "lost_frames"))
    if not isinstance(_get(msg, "untrained", ""), bool):
        _fail("untrained", "boolean", msg["untrained"])
    _str(msg, "error", "", nullable=True)
    if msg["error"] is None:
        for key in ("width", "height"):
            if msg[key] < 1:
                _fail(key, "integer >= 1 (0 only for a frame that could not be decoded, with an "
                      "error)", msg[key])
    _num_map(msg, "timings_ms", "", 0.0, None)
    # A model states its own intensity scale; messages without the field use the FACS default.
    au_max = msg.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX)
    if not _is_num(au_max) or au_max <= 0:
        _fail("au_intensity_max", "number > 0 (the model's AU intensity scale)", au_max)
    faces = _get(msg, "faces", "")
    if not isinstance(faces, list):
        _fail("faces", "list of faces", faces)
    for i, face in enumerate(faces):
        _validate_face(face, f"faces[{i}].", float(au_max))
    if "faces_cut" in msg:
        _int(msg, "faces_cut", "")
    if "source" in msg:
        _str(msg, "source", "")


def _validate_eos(msg: Mapping[str, Any]) -> None:
    _stream_id(msg)
    _int(msg, "seq", "")
    _int(msg, "frames", "")
    _int(msg, "dropped_frames", "")
    _str(msg, "error", "", nullable=True)
    _num(msg, "emit_time", "", 0.0)
    _optional_ints(msg, ("skipped_frames", "lost_frames", "reconnects"))
    if "outage_s" in msg:
        _num(msg, "outage_s", "", 0.0)
    if "skipped_frame_indices" in msg:
        idx = msg["skipped_frame_indices"]
        if not isinstance(idx, list) or not all(_is_int(i) and i >= 0 for i in idx):
            _fail("skipped_frame_indices", "list of integers >= 0", idx)
    if "sink_losses" in msg:
        for name, n in _map(msg, "sink_losses", "").items():
            if not _is_int(n) or n < 0:
                _fail(f"sink_losses.{name}", "integer >= 0", n)


def _optional_ints(msg: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Counters that version 1 producers do not send: optional, integers >= 0."""
    for key in keys:
        if key in msg:
            _int(msg, key, "")


def _validate_sinks(msg: Mapping[str, Any]) -> None:
    for name, counters in _map(msg, "sinks", "").items():
        if not isinstance(counters, dict):
            _fail(f"sinks.{name}", "map of counters", counters)
        _optional_ints(counters, _SINK_INT_COUNTERS)
        for k, v in counters.items():
            if k not in _SINK_INT_COUNTERS and not isinstance(v, (bool, str)):
                _check_num(v, f"sinks.{name}.{k}", 0.0, None)


def _validate_stats(msg: Mapping[str, Any]) -> None:
    _num(msg, "emit_time", "", 0.0)
    _num(msg, "fps", "", 0.0)
    for key in ("elapsed_s", "faces_per_s"):  # optional extras of the pipeline's collector
        if key in msg:
            _num(msg, key, "", 0.0)
    for key in ("frames", "faces"):
        if key in msg:
            _int(msg, key, "")
    stages = _map(msg, "stages", "")
    for name, st in stages.items():
        if not isinstance(st, dict):
            _fail(f"stages.{name}", "map {p50_ms, p95_ms, count}", st)
        _num(st, "p50_ms", f"stages.{name}.", 0.0)
        _num(st, "p95_ms", f"stages.{name}.", 0.0)
        if "mean_ms" in st:
            _num(st, "mean_ms", f"stages.{name}.", 0.0)
        _int(st, "count", f"stages.{name}.")
    streams = _map(msg, "streams", "")
    for sid, counters in streams.items():
        if not isinstance(counters, dict):
            _fail(f"streams.{sid}", "map of counters", counters)
        for k, v in counters.items():
            where = f"streams.{sid}.{k}"
            if not isinstance(k, str):
                _fail(f"streams.{sid} key", "string", k)
            if k == "error" or k in _STREAM_TEXT:
                if v is not None and not isinstance(v, str):
                    _fail(where, "string or null", v)
            elif k in _STREAM_INT_COUNTERS:
                if not _is_int(v) or v < 0:
                    _fail(where, "integer >= 0", v)
            elif k == "ended" or isinstance(v, bool):
                if not isinstance(v, bool):
                    _fail(where, "boolean", v)
            else:
                _check_num(v, where, 0.0, None)
    if "sinks" in msg:
        _validate_sinks(msg)


_VALIDATORS = {"frame": _validate_frame, "eos": _validate_eos, "stats": _validate_stats}


def validate(msg: Any) -> dict[str, Any]:
    """Check ``msg`` against the protocol; return it unchanged or raise :class:`ProtocolError`.

    Unknown extra fields are allowed (forward compatibility: a newer producer may add fields
    without bumping ``schema_version``); missing, mistyped or out-of-range fields are not. Every
    version of :data:`~norface_rt.config.SUPPORTED_SCHEMA_VERSIONS` is accepted (version 1
    messages are version 2 messages without its optional fields).
    """
    if not isinstance(msg, dict):
        _fail("message", "map", msg)
    mtype = _get(msg, "type", "")
    if mtype not in _VALIDATORS:
        _fail("type", f"one of {list(MESSAGE_TYPES)}", mtype)
    ver = _get(msg, "schema_version", "")
    if not _is_int(ver) or ver not in SUPPORTED_SCHEMA_VERSIONS:
        _fail("schema_version", f"one of {list(SUPPORTED_SCHEMA_VERSIONS)} (the versions this "
              f"reader knows; it writes {SCHEMA_VERSION})", ver)
    _VALIDATORS[mtype](msg)
    return msg


# --------------------------------------------------------------------------- encode / decode
def encode(msg: Mapping[str, Any], *, check: bool = True) -> bytes:
    """msgpack-encode a message (``use_bin_type``), validating it first unless ``check=False``.

    Validating on the producer side means a bug shows up as a clear error at the publisher, not as
    a stream of rejected messages in every consumer.
    """
    if check:
        validate(msg)
    try:
        return msgpack.packb(msg, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"message: cannot be encoded as msgpack: {exc}") from exc


def decode(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode and validate one payload; anything malformed raises :class:`ProtocolError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("payload", "bytes", data)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload: expected at most {MAX_PAYLOAD_BYTES} bytes, got {len(data)}")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"payload: expected one msgpack map, got undecodable bytes "
                            f"({type(exc).__name__}: {exc}; {len(data)} bytes)") from exc
    return validate(msg)


def topic_for(msg: Mapping[str, Any]) -> str:
    """The ZeroMQ topic of a message: its stream id, or :data:`STATS_TOPIC` for stats."""
    if msg.get("type") == "stats":
        return STATS_TOPIC
    sid = msg.get("stream_id")
    if not isinstance(sid, str) or not sid:
        _fail("stream_id", "non-empty string (the topic)", sid)
    return sid


def encode_multipart(msg: Mapping[str, Any], *, check: bool = True) -> list[bytes]:
    """``[topic, payload]`` ready for ``socket.send_multipart``."""
    payload = encode(msg, check=check)
    return [topic_for(msg).encode("utf-8"), payload]


def decode_multipart(parts: Sequence[bytes]) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`encode_multipart`; also checks that the topic matches the message."""
    if len(parts) != 2:
        raise ProtocolError(f"framing: expected 2 frames [topic, payload], got {len(parts)}")
    try:
        topic = bytes(parts[0]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"topic: expected UTF-8 text, got {bytes(parts[0])[:40]!r}") from exc
    msg = decode(parts[1])
    expected = topic_for(msg)
    if topic != expected:
        _fail("topic", f"{expected!r} (the message's stream_id, or {STATS_TOPIC!r} for stats)",
              topic)
    return topic, msg


# --------------------------------------------------------------------------- message builders
def eos_message(eos: EndOfStream, seq: int, *, emit_time: float | None = None,
                sink_losses: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``eos`` message for a stream; ``seq`` continues the stream's frame sequence.
    ``sink_losses``: messages each output has lost so far (buffer full or write failed)."""
    msg: dict[str, Any] = {
        "type": "eos",
        "schema_version": SCHEMA_VERSION,
        "stream_id": eos.stream_id,
        "seq": int(seq),
        "frames": int(eos.frames),
        "dropped_frames": int(eos.dropped),
        "error": None if eos.error is None else str(eos.error),
        "emit_time": float(time.time() if emit_time is None else emit_time),
        "skipped_frames": int(eos.skipped),
        "skipped_frame_indices": [int(i) for i in eos.skipped_indices],
        "lost_frames": int(eos.lost),
        "outage_s": float(eos.outage_s),
        "reconnects": int(eos.reconnects),
    }
    if sink_losses is not None:
        msg["sink_losses"] = {str(k): int(v) for k, v in sink_losses.items()}
    return validate(msg)


def stats_message(payload: Mapping[str, Any], *, emit_time: float | None = None) -> dict[str, Any]:
    """Wrap a stats payload ``{"stages": {...}, "fps": float, "streams": {...}, ...}``.

    The payload is copied (numbers coerced to plain Python types) so later changes by the
    pipeline's collector cannot alter a message already handed to a sink. Extra payload keys
    (``elapsed_s``, ``frames``, ...) are kept.
    """
    if not isinstance(payload, Mapping):
        _fail("stats payload", "map with stages, fps, streams", payload)
    msg: dict[str, Any] = {k: _plain(v) for k, v in payload.items()
                           if k not in ("type", "schema_version", "emit_time")}
    msg["type"] = "stats"
    msg["schema_version"] = SCHEMA_VERSION
    msg["emit_time"] = float(time.time() if emit_time is None else emit_time)
    return validate(msg)


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
