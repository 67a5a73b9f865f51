"""The message schema: version, the rules every message obeys, and the validator.

Three message types travel on the wire (``docs/protocol.md``; ``docs/schema/*.json`` publishes
the same rules as JSON Schemas for other languages, and the tests check both against the same
messages): ``frame`` (one per analysed frame and stream), ``eos`` (one per stream, after its last
frame) and ``stats`` (periodic pipeline statistics).

The validator is hand-written rather than generated: it runs on every message in the publish
thread and in every listener, so it must be cheap and must not add a runtime dependency; its
errors name the field and the expected and actual values; and some rules are beyond a schema
(``top_emotion`` is one of ``emotions``; AU intensities are bounded by the message's own
``au_intensity_max``; stats counters are typed by their name). ``msgspec`` was measured as an
alternative (docs/protocol.md, "Validation").

Schema version 2 added optional fields (a frame's ``source`` and ``faces_cut``; a face's
``quality``, ``landmarks`` and ``blendshapes``) and frames of undecodable files (``width`` =
``height`` = 0 with an ``error``); readers accept every version of
:data:`SUPPORTED_SCHEMA_VERSIONS` (version 1 messages are version 2 messages without the new
fields). Compatible additions count in ``schema_minor`` (:data:`SCHEMA_MINOR`; absent means 0):
2.1 added a face's ``gaze``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from norface_rt.config import AU_NAMES, DEFAULT_AU_INTENSITY_MAX
from norface_rt.wire.names import RESERVED_TOPIC_PREFIX

# Wire protocol version (docs/protocol.md, "Versioning"). 2: optional face landmarks, blendshapes
# and quality, frame source and faces_cut; image folders count unreadable files in frame_index
# (a frame message with an error and width = height = 0). Readers accept every supported version:
# version 1 messages are version 2 messages without the new fields.
SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
# Compatible additions within SCHEMA_VERSION, sent as ``schema_minor`` (absent: 0). Readers
# accept any minor (fields they do not know are kept, never refused). 1: a face's ``gaze``.
SCHEMA_MINOR = 1
MESSAGE_TYPES = ("frame", "eos", "stats")
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


def fail(path: str, expected: str, actual: Any) -> NoReturn:
    """Raise :class:`ProtocolError` naming ``path``, what was expected and what came."""
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
        fail(f"{path}{key}", f"integer >= {minimum}", v)


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
        fail(where, rng + (" or null" if nullable else ""), v)


def _str(d: Mapping[str, Any], key: str, path: str, nullable: bool = False,
         nonempty: bool = False) -> None:
    v = _get(d, key, path)
    if v is None and nullable:
        return
    if not isinstance(v, str) or (nonempty and not v):
        fail(f"{path}{key}", ("non-empty string" if nonempty else "string")
              + (" or null" if nullable else ""), v)


def _get(d: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise ProtocolError(f"{path}{key}: required field missing "
                            f"(present: {sorted(map(str, d))[:20]})")
    return d[key]


def _map(d: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    v = _get(d, key, path)
    if not isinstance(v, dict):
        fail(f"{path}{key}", "map", v)
    for k in v:
        if not isinstance(k, str):
            fail(f"{path}{key} key", "string", k)
    return v


def _num_map(d: Mapping[str, Any], key: str, path: str, lo: float | None, hi: float | None,
             au_keys: bool = False) -> None:
    m = _map(d, key, path)
    lo_ = -math.inf if lo is None else lo
    hi_ = math.inf if hi is None else hi
    for k, v in m.items():
        # Fast path first: this loop runs for every AU of every face of every frame.
        if au_keys and k not in _KNOWN_AUS and not _AU_KEY.fullmatch(k):
            fail(f"{path}{key} key", "an AU name like 'AU12' (AU + two digits)", k)
        if type(v) is float and lo_ <= v <= hi_ and v != math.inf and v != -math.inf:
            continue
        _check_num(v, f"{path}{key}.{k}", lo, hi)


def _stream_id(d: Mapping[str, Any], path: str = "") -> None:
    _str(d, "stream_id", path, nonempty=True)
    if d["stream_id"].startswith(RESERVED_TOPIC_PREFIX):
        fail(f"{path}stream_id", "a stream id not starting with '_' (reserved for service "
              "topics such as '_stats')", d["stream_id"])


# --------------------------------------------------------------------------- per-type validators
def _validate_face(face: Any, path: str, au_intensity_max: float) -> None:
    if not isinstance(face, dict):
        fail(path.rstrip("."), "map (a face)", face)
    tid = _get(face, "track_id", path)
    if not _is_int(tid) or tid < -1:
        fail(f"{path}track_id", "integer >= -1 (-1 = not tracked)", tid)
    box = _get(face, "box", path)
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_num(b) for b in box):
        fail(f"{path}box", "[x0, y0, x1, y1] of 4 finite numbers", box)
    _num(face, "confidence", path, 0.0, 1.0)
    pose = _get(face, "pose", path)
    if pose is not None:
        if not isinstance(pose, dict):
            fail(f"{path}pose", "map {yaw, pitch, roll} or null", pose)
        for k in ("yaw", "pitch", "roll"):
            _num(pose, k, f"{path}pose.", -180.0, 180.0)
    _num_map(face, "au_occurrence", path, 0.0, 1.0, au_keys=True)
    _num_map(face, "au_intensity", path, 0.0, au_intensity_max, au_keys=True)
    _num_map(face, "emotions", path, 0.0, 1.0)
    _str(face, "top_emotion", path)
    if face["emotions"] and face["top_emotion"] not in face["emotions"]:
        fail(f"{path}top_emotion", f"one of {sorted(face['emotions'])}", face["top_emotion"])
    _str(face, "model_id", path)
    # Optional fields of schema version 2.
    if "quality" in face:
        q = face["quality"]
        if (not isinstance(q, dict) or not isinstance(q.get("ok"), bool)
                or not isinstance(q.get("issues"), list)
                or not all(isinstance(i, str) for i in q["issues"])):
            fail(f"{path}quality", "map {ok: boolean, issues: list of strings}", q)
    if "landmarks" in face:
        lms = face["landmarks"]
        if not isinstance(lms, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 3 and all(_is_num(c) for c in p)
                for p in lms):
            fail(f"{path}landmarks", "list of [x, y, z] triples of finite numbers", lms)
    if "blendshapes" in face:
        _num_map(face, "blendshapes", path, 0.0, 1.0)
    if "gaze" in face:  # schema 2.1
        _validate_gaze(face["gaze"], f"{path}gaze")


def _validate_gaze(gaze: Any, path: str) -> None:
    if not isinstance(gaze, dict):
        fail(path, "map {eye_0, eye_1, angle_x, angle_y, pupil_0, pupil_1}", gaze)
    for pupil in ("pupil_0", "pupil_1"):
        v = _get(gaze, pupil, f"{path}.")
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_num(c) for c in v):
            fail(f"{path}.{pupil}", "[x, y] of 2 finite numbers (pixels)", v)
    for eye in ("eye_0", "eye_1"):
        v = _get(gaze, eye, f"{path}.")
        if (not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_num(c) for c in v)
                or not 0.99 <= math.sqrt(sum(c * c for c in v)) <= 1.01):
            fail(f"{path}.{eye}", "[x, y, z] unit vector of 3 finite numbers", v)
    for angle in ("angle_x", "angle_y"):
        _num(gaze, angle, f"{path}.", -math.pi, math.pi)


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
        fail("untrained", "boolean", msg["untrained"])
    _str(msg, "error", "", nullable=True)
    if msg["error"] is None:
        for key in ("width", "height"):
            if msg[key] < 1:
                fail(key, "integer >= 1 (0 only for a frame that could not be decoded, with an "
                      "error)", msg[key])
    _num_map(msg, "timings_ms", "", 0.0, None)
    # A model states its own intensity scale; messages without the field use the FACS default.
    au_max = msg.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX)
    if not _is_num(au_max) or au_max <= 0:
        fail("au_intensity_max", "number > 0 (the model's AU intensity scale)", au_max)
    faces = _get(msg, "faces", "")
    if not isinstance(faces, list):
        fail("faces", "list of faces", faces)
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
            fail("skipped_frame_indices", "list of integers >= 0", idx)
    if "sink_losses" in msg:
        for name, n in _map(msg, "sink_losses", "").items():
            if not _is_int(n) or n < 0:
                fail(f"sink_losses.{name}", "integer >= 0", n)


def _optional_ints(msg: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Counters that version 1 producers do not send: optional, integers >= 0."""
    for key in keys:
        if key in msg:
            _int(msg, key, "")


def _validate_sinks(msg: Mapping[str, Any]) -> None:
    for name, counters in _map(msg, "sinks", "").items():
        if not isinstance(counters, dict):
            fail(f"sinks.{name}", "map of counters", counters)
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
            fail(f"stages.{name}", "map {p50_ms, p95_ms, count}", st)
        _num(st, "p50_ms", f"stages.{name}.", 0.0)
        _num(st, "p95_ms", f"stages.{name}.", 0.0)
        if "mean_ms" in st:
            _num(st, "mean_ms", f"stages.{name}.", 0.0)
        _int(st, "count", f"stages.{name}.")
    streams = _map(msg, "streams", "")
    for sid, counters in streams.items():
        if not isinstance(counters, dict):
            fail(f"streams.{sid}", "map of counters", counters)
        for k, v in counters.items():
            where = f"streams.{sid}.{k}"
            if not isinstance(k, str):
                fail(f"streams.{sid} key", "string", k)
            if k == "error" or k in _STREAM_TEXT:
                if v is not None and not isinstance(v, str):
                    fail(where, "string or null", v)
            elif k in _STREAM_INT_COUNTERS:
                if not _is_int(v) or v < 0:
                    fail(where, "integer >= 0", v)
            elif k == "ended" or isinstance(v, bool):
                if not isinstance(v, bool):
                    fail(where, "boolean", v)
            else:
                _check_num(v, where, 0.0, None)
    if "sinks" in msg:
        _validate_sinks(msg)


_VALIDATORS = {"frame": _validate_frame, "eos": _validate_eos, "stats": _validate_stats}


def validate(msg: Any) -> dict[str, Any]:
    """Check ``msg`` against the protocol; return it unchanged or raise :class:`ProtocolError`.

    Unknown extra fields are allowed (forward compatibility: a newer producer may add fields
    without bumping ``schema_version``); missing, mistyped or out-of-range fields are not. Every
    version of :data:`SUPPORTED_SCHEMA_VERSIONS` is accepted (version 1
    messages are version 2 messages without its optional fields).
    """
    if not isinstance(msg, dict):
        fail("message", "map", msg)
    mtype = _get(msg, "type", "")
    if not isinstance(mtype, str) or mtype not in _VALIDATORS:  # (a list is not even hashable)
        fail("type", f"one of {list(MESSAGE_TYPES)}", mtype)
    ver = _get(msg, "schema_version", "")
    if not _is_int(ver) or ver not in SUPPORTED_SCHEMA_VERSIONS:
        fail("schema_version", f"one of {list(SUPPORTED_SCHEMA_VERSIONS)} (the versions this "
              f"reader knows; it writes {SCHEMA_VERSION})", ver)
    if "schema_minor" in msg:  # any minor is readable: it only adds fields
        _int(msg, "schema_minor", "")
    _VALIDATORS[mtype](msg)
    return msg
