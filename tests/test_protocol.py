"""Wire protocol: msgpack round trips, validation errors, and the published JSON Schemas."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jsonschema
import msgpack
import numpy as np
import pytest

from norface_rt import protocol
from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.protocol import ProtocolError
from norface_rt.stats import StageStats
from norface_rt.config import BLENDSHAPE_NAMES
from norface_rt.types import EndOfStream, FaceQuality, FaceResult, FrameResult, Gaze, HeadPose
from norface_rt.wire import SCHEMA_VERSION, SUPPORTED_SCHEMA_VERSIONS

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schema"


def _face(track_id: int, pose: HeadPose | None) -> FaceResult:
    rng = np.random.default_rng(track_id)
    emo = rng.dirichlet(np.ones(len(EMOTION_NAMES)))
    return FaceResult(
        track_id=track_id, box=(10.0, 20.0, 110.0, 140.0), confidence=0.9, pose=pose,
        au_occurrence=dict(zip(AU_NAMES, map(float, rng.random(len(AU_NAMES))))),
        au_intensity=dict(zip(AU_NAMES, map(float, 5 * rng.random(len(AU_NAMES))))),
        emotions=dict(zip(EMOTION_NAMES, map(float, emo))),
        top_emotion=EMOTION_NAMES[int(np.argmax(emo))], model_id="norface-small-untrained")


def frame_message(n_faces: int = 2, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        stream_id="cam0", seq=3, frame_index=7, pts=0.28, capture_time=time.time(), width=640,
        height=360, dropped=1, untrained=True, timings={"detect": 0.004, "infer": 0.02},
        emit_time=time.time())
    args.update(kw)
    faces = [_face(i, HeadPose(12.0, -4.0, 1.5) if i % 2 == 0 else None) for i in range(n_faces)]
    return FrameResult(faces=faces, **args).to_message()


def frame_message_v2(**kw: Any) -> dict[str, Any]:
    """A frame with every optional field of schema version 2 (2.1: a face's gaze)."""
    rng = np.random.default_rng(5)
    faces = [_face(i, HeadPose(12.0, -4.0, 1.5)) for i in range(2)]
    faces[0].gaze = Gaze((0.1, -0.05, -math.sqrt(1 - 0.0125)), (0.0, 0.0, -1.0), 0.05, -0.025,
                         (40.5, 60.25), (95.0, 61.0))
    for f, issues in zip(faces, [(), ("small_face", "extreme_pose")]):
        f.landmarks = (rng.random((478, 3)) * 300).astype(np.float32)
        f.blendshapes = dict(zip(BLENDSHAPE_NAMES, map(float, rng.random(len(BLENDSHAPE_NAMES)))))
        f.quality = FaceQuality(issues)
    args: dict[str, Any] = dict(
        stream_id="cam0", seq=3, frame_index=7, pts=None, capture_time=time.time(), width=640,
        height=360, dropped=0, untrained=True, timings={"detect": 0.004}, emit_time=time.time(),
        source="photos/b.jpg", faces_cut=2)
    args.update(kw)
    return FrameResult(faces=faces, **args).to_message(landmarks=True, blendshapes=True)


def undecodable_frame() -> dict[str, Any]:
    """What an image folder sends for a file it cannot read: no pixels, no faces, an error."""
    return FrameResult(stream_id="cam0", seq=2, frame_index=2, pts=None, capture_time=time.time(),
                       width=0, height=0, dropped=0, faces=[], untrained=False,
                       error="cannot decode image photos/c.jpg (26 bytes)",
                       source="photos/c.jpg").to_message()


def eos_msg(error: str | None = None) -> dict[str, Any]:
    return protocol.eos_message(EndOfStream("cam0", frames=72, dropped=2, error=error), seq=72)


def stats_msg() -> dict[str, Any]:
    st = StageStats()
    for i in range(20):
        st.add("infer", 0.01 + i * 1e-4)
        st.add("latency", 0.05)
        st.frame_done("cam0", faces=2, dropped=0)
    st.stream_ended("cam0", dropped=0, error="decoder lost the stream")
    st.frame_done("cam1", faces=0, dropped=4)
    return protocol.stats_message(st.snapshot())


def real_messages() -> list[dict[str, Any]]:
    return [frame_message(), frame_message(0, pts=None, error="inference failed: boom"),
            frame_message(1, untrained=False), frame_message_v2(), undecodable_frame(), eos_msg(),
            eos_msg("rtsp: connection lost"), stats_msg()]


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.protocols.Validator]:
    out = {}
    for name in ("frame", "eos", "stats"):
        schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[name] = jsonschema.Draft202012Validator(schema)
    return out


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("msg", real_messages(), ids=lambda m: m["type"])
def test_encode_decode_round_trip(msg: dict[str, Any]) -> None:
    data = protocol.encode(msg)
    assert isinstance(data, bytes)
    assert protocol.decode(data) == msg
    topic, back = protocol.decode_multipart(protocol.encode_multipart(msg))
    assert back == msg
    assert topic == ("_stats" if msg["type"] == "stats" else "cam0")


def test_message_builders_fill_type_and_version() -> None:
    eos = eos_msg("boom")
    assert eos["type"] == "eos" and eos["schema_version"] == SCHEMA_VERSION
    assert (eos["seq"], eos["frames"], eos["dropped_frames"], eos["error"]) == (72, 72, 2, "boom")
    st = stats_msg()
    assert st["type"] == "stats" and st["stages"]["infer"]["count"] == 20
    assert st["streams"]["cam0"]["error"] == "decoder lost the stream"


def test_stats_payload_is_copied_and_numpy_scalars_become_plain() -> None:
    payload = {"fps": np.float32(12.5), "stages": {"infer": {"p50_ms": np.float64(3.0),
               "p95_ms": 4.0, "count": np.int64(9)}}, "streams": {"cam0": {"frames": 9}}}
    msg = protocol.stats_message(payload)
    payload["stages"]["infer"]["count"] = 10
    assert msg["stages"]["infer"]["count"] == 9
    assert type(msg["fps"]) is float and type(msg["stages"]["infer"]["count"]) is int
    assert protocol.decode(protocol.encode(msg))["fps"] == 12.5


# ----------------------------------------------------------------------------- JSON Schemas
@pytest.mark.parametrize("msg", real_messages(), ids=lambda m: m["type"])
def test_schemas_accept_real_messages(msg: dict[str, Any], validators: Any) -> None:
    # Through JSON, as a JSONL consumer sees it.
    validators[msg["type"]].validate(json.loads(json.dumps(msg)))


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(m: dict[str, Any]) -> None:
        obj = m
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(m: dict[str, Any]) -> None:
        obj = m
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]
    return mutate


# (message kind, mutation, field the ProtocolError must name)
BROKEN = [
    ("frame", _delete(("seq",)), "seq"),
    ("frame", _delete(("faces",)), "faces"),
    ("frame", _set(("seq",), -1), "seq"),
    ("frame", _set(("seq",), 1.5), "seq"),
    ("frame", _set(("type",), "frames"), "type"),
    ("frame", _set(("schema_version",), 3), "schema_version"),
    ("frame", _set(("stream_id",), ""), "stream_id"),
    ("frame", _set(("stream_id",), "_stats"), "stream_id"),
    ("frame", _set(("width",), 0), "width"),
    ("frame", _set(("untrained",), 1), "untrained"),
    ("frame", _set(("pts",), "0.5"), "pts"),
    ("frame", _set(("error",), 3), "error"),
    ("frame", _set(("timings_ms", "infer"), -1.0), "timings_ms.infer"),
    ("frame", _set(("faces",), {"0": {}}), "faces"),
    ("frame", _delete(("faces", 0, "au_intensity")), "faces[0].au_intensity"),
    ("frame", _set(("faces", 0, "au_occurrence", "AU12"), 1.2), "faces[0].au_occurrence.AU12"),
    ("frame", _set(("faces", 1, "au_intensity", "AU06"), 5.5), "faces[1].au_intensity.AU06"),
    ("frame", _set(("faces", 1, "au_intensity", "AU06"), -0.1), "faces[1].au_intensity.AU06"),
    ("frame", _set(("faces", 0, "au_intensity", "smile"), 1.0), "faces[0].au_intensity key"),
    ("frame", _set(("faces", 0, "emotions", "happy"), 1.01), "faces[0].emotions.happy"),
    ("frame", _set(("faces", 0, "confidence"), 2.0), "faces[0].confidence"),
    ("frame", _set(("faces", 0, "box"), [1.0, 2.0, 3.0]), "faces[0].box"),
    ("frame", _set(("faces", 0, "pose"), {"yaw": 1.0, "pitch": 2.0}), "faces[0].pose.roll"),
    ("frame", _set(("faces", 0, "pose", "yaw"), 270.0), "faces[0].pose.yaw"),
    ("frame", _set(("faces", 0, "track_id"), -2), "faces[0].track_id"),
    ("frame", _set(("faces", 0, "track_id"), True), "faces[0].track_id"),
    ("eos", _delete(("frames",)), "frames"),
    ("eos", _set(("error",), ["x"]), "error"),
    ("eos", _set(("dropped_frames",), -3), "dropped_frames"),
    ("frame_v2", _set(("faces", 0, "landmarks", 5), [1.0, 2.0]), "faces[0].landmarks"),
    ("frame_v2", _set(("faces", 0, "landmarks"), "478 points"), "faces[0].landmarks"),
    ("frame_v2", _set(("faces", 1, "blendshapes", "jawOpen"), 1.5), "faces[1].blendshapes.jawOpen"),
    ("frame_v2", _set(("faces", 0, "quality"), {"ok": "yes", "issues": []}), "faces[0].quality"),
    ("frame_v2", _set(("faces", 0, "quality"), {"ok": False, "issues": [3]}), "faces[0].quality"),
    ("frame_v2", _set(("faces_cut",), -1), "faces_cut"),
    ("frame_v2", _set(("source",), 42), "source"),
    ("frame_v2", _delete(("faces", 0, "gaze", "eye_1")), "faces[0].gaze.eye_1"),
    ("frame_v2", _set(("faces", 0, "gaze", "eye_0"), [0.0, 1.0]), "faces[0].gaze.eye_0"),
    ("frame_v2", _set(("faces", 0, "gaze", "angle_x"), "0.1"), "faces[0].gaze.angle_x"),
    ("frame_v2", _set(("faces", 0, "gaze", "angle_y"), 4.0), "faces[0].gaze.angle_y"),
    ("frame_v2", _set(("faces", 0, "gaze"), [0.0, 0.1]), "faces[0].gaze"),
    ("frame_v2", _set(("faces", 0, "gaze", "pupil_1"), [1.0]), "faces[0].gaze.pupil_1"),
    ("frame_v2", _set(("schema_minor",), -1), "schema_minor"),
    ("frame_v2", _set(("height",), 0), "height"),  # no pixels without an error saying why
    ("stats", _delete(("stages",)), "stages"),
    ("stats", _set(("fps",), -1.0), "fps"),
    ("stats", _delete(("stages", "infer", "p95_ms")), "stages.infer.p95_ms"),
    ("stats", _set(("stages", "infer", "count"), 2.5), "stages.infer.count"),
    ("stats", _set(("streams", "cam0", "frames"), -1), "streams.cam0.frames"),
    ("stats", _set(("streams", "cam0", "ended"), "yes"), "streams.cam0.ended"),
]


def _base(kind: str) -> dict[str, Any]:
    return {"frame": frame_message, "frame_v2": frame_message_v2, "eos": eos_msg,
            "stats": stats_msg}[kind]()


@pytest.mark.parametrize("kind,mutate,field", BROKEN, ids=[b[2] + "-" + b[0] for b in BROKEN])
def test_broken_messages_rejected_by_schema_and_decoder(kind: str, mutate: Any, field: str,
                                                        validators: Any) -> None:
    msg = copy.deepcopy(_base(kind))
    mutate(msg)
    validator = validators.get(msg.get("type"), validators[kind.split("_")[0]])
    assert list(validator.iter_errors(json.loads(json.dumps(msg)))), "schema accepted a broken message"
    data = msgpack.packb(msg, use_bin_type=True)
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(data)
    assert str(exc.value).startswith(field), str(exc.value)
    # The producer refuses it too.
    with pytest.raises(ProtocolError):
        protocol.encode(msg)


def test_error_names_expected_and_actual() -> None:
    msg = frame_message()
    msg["faces"][0]["au_intensity"]["AU12"] = 7.25
    with pytest.raises(ProtocolError, match=r"faces\[0\]\.au_intensity\.AU12: expected number in "
                                            r"\[0\.0, 5\.0\], got 7\.25"):
        protocol.validate(msg)
    del msg["width"]
    with pytest.raises(ProtocolError, match=r"width: required field missing"):
        protocol.validate(msg)


def test_unknown_extra_fields_are_allowed(validators: Any) -> None:
    msg = frame_message()
    msg["new_field_in_a_later_release"] = {"x": 1}
    msg["faces"][0]["pupil_mm"] = [0.1, 0.2]
    assert protocol.decode(protocol.encode(msg)) == msg
    validators["frame"].validate(json.loads(json.dumps(msg)))


def test_top_emotion_must_be_an_emotion_key() -> None:
    msg = frame_message()
    msg["faces"][0]["top_emotion"] = "bored"
    with pytest.raises(ProtocolError, match=r"faces\[0\]\.top_emotion: expected one of"):
        protocol.validate(msg)


# ----------------------------------------------------------------------------- malformed bytes
@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"garbage that is not msgpack \xff\xfe", b"\x93\x01\x02",  # truncated array
    msgpack.packb([1, 2, 3]), msgpack.packb("frame"), msgpack.packb({"type": "frame"}),
    msgpack.packb({"type": "hello", "schema_version": 1}),
], ids=["empty", "reserved-byte", "text", "truncated", "array", "string", "missing", "bad-type"])
def test_malformed_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError) as exc:
        protocol.decode(data)
    assert "expected" in str(exc.value) or "missing" in str(exc.value)


def test_nan_and_numpy_values_refused_on_encode() -> None:
    msg = frame_message()
    msg["faces"][0]["emotions"]["happy"] = math.nan
    with pytest.raises(ProtocolError, match="emotions.happy"):
        protocol.encode(msg)
    msg = frame_message()
    msg["faces"][0]["confidence"] = np.float32(0.5)
    with pytest.raises(ProtocolError, match="confidence"):
        protocol.encode(msg)


def test_multipart_framing_errors() -> None:
    msg = frame_message()
    topic, payload = protocol.encode_multipart(msg)
    with pytest.raises(ProtocolError, match="framing: expected 2 frames"):
        protocol.decode_multipart([payload])
    with pytest.raises(ProtocolError, match="framing: expected 2 frames"):
        protocol.decode_multipart([topic, payload, b""])
    with pytest.raises(ProtocolError, match="topic: expected 'cam0'"):
        protocol.decode_multipart([b"cam9", payload])
    with pytest.raises(ProtocolError, match="topic: expected UTF-8"):
        protocol.decode_multipart([b"\xff\xfe", payload])
    stats = protocol.encode_multipart(stats_msg())
    assert stats[0] == b"_stats"


def test_oversized_payload_refused_before_unpacking() -> None:
    with pytest.raises(ProtocolError, match="payload: expected at most"):
        protocol.decode(b"\x00" * (protocol.MAX_PAYLOAD_BYTES + 1))


def test_corrupted_payloads_only_ever_raise_protocol_error() -> None:
    """Bit flips, truncations and odd-but-valid msgpack: decode returns a valid message or raises
    ProtocolError, never anything else (a listener must not crash on the wire's content)."""
    rng = np.random.default_rng(1)
    good = protocol.encode(frame_message())
    samples: list[bytes] = [msgpack.packb({1: 2, "type": "frame"}),
                            msgpack.packb({"type": "frame", "schema_version": 1, "stream_id": b"x"}),
                            msgpack.packb({"type": "eos", "schema_version": True})]
    for _ in range(400):
        b = bytearray(good)
        for i in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
            b[i] = int(rng.integers(0, 256))
        samples.append(bytes(b))
        samples.append(good[: int(rng.integers(0, len(good)))])
        samples.append(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
    rejected = 0
    for data in samples:
        try:
            protocol.decode(data)
        except ProtocolError:
            rejected += 1
    assert rejected > len(samples) // 2


def test_a_model_with_its_own_intensity_scale_is_accepted(validators: Any) -> None:
    """The intensity bound comes from the model (ModelConfig.au_intensity_max): a model on a 0..10
    scale sends its scale and is accepted up to it; standard models send nothing new."""
    standard = frame_message(1)
    assert "au_intensity_max" not in standard  # unchanged on the wire for 0..5 models
    msg = frame_message(1, au_intensity_max=10.0)
    msg["faces"][0]["au_intensity"]["AU12"] = 8.5
    assert protocol.decode(protocol.encode(msg))["au_intensity_max"] == 10.0
    assert not list(validators["frame"].iter_errors(json.loads(json.dumps(msg))))
    msg["faces"][0]["au_intensity"]["AU12"] = 10.5
    with pytest.raises(ProtocolError, match=r"faces\[0\]\.au_intensity\.AU12: expected number in "
                                            r"\[0\.0, 10\.0\]"):
        protocol.validate(msg)
    with pytest.raises(ProtocolError, match="au_intensity_max: expected number > 0"):
        protocol.validate({**standard, "au_intensity_max": 0})


# ----------------------------------------------------------------------------- versions
def test_version_1_messages_are_still_read(validators: Any) -> None:
    # A version-1 producer's messages: no optional fields, schema_version 1.
    for msg in (frame_message(), eos_msg(), stats_msg()):
        msg["schema_version"] = 1
        msg.pop("faces_cut", None)
        assert protocol.decode(protocol.encode(msg)) == msg
        validators[msg["type"]].validate(json.loads(json.dumps(msg)))
    assert SUPPORTED_SCHEMA_VERSIONS == (1, SCHEMA_VERSION) and SCHEMA_VERSION == 2


def test_version_2_fields_round_trip_and_stay_compact() -> None:
    msg = frame_message_v2()
    assert msg["source"] == "photos/b.jpg" and msg["faces_cut"] == 2
    face0, face1 = msg["faces"]
    assert face0["quality"] == {"ok": True, "issues": []}
    assert face1["quality"] == {"ok": False, "issues": ["small_face", "extreme_pose"]}
    assert len(face0["landmarks"]) == 478 and all(len(p) == 3 for p in face0["landmarks"])
    assert all(round(c, 1) == c for p in face0["landmarks"] for c in p)  # 0.1 px
    assert list(face0["blendshapes"]) == list(BLENDSHAPE_NAMES)
    assert len(json.dumps(face0["landmarks"])) < 12_000  # about 10 KB of JSON per face
    assert protocol.decode(protocol.encode(msg)) == msg
    plain = FrameResult(stream_id="c", seq=0, frame_index=0, pts=0.0, capture_time=1.0, width=4,
                        height=4, dropped=0, faces=[], untrained=False).to_message()
    assert "source" not in plain and plain["faces_cut"] == 0  # optional fields stay optional


# ----------------------------------------------------------------------------- reliability fields
def reliability_messages() -> list[dict[str, Any]]:
    """Messages with the optional fields of skipped / lost frames, outages and output losses."""
    frame = frame_message(skipped=2, lost=40)
    eos = protocol.eos_message(EndOfStream("cam0", frames=70, skipped=2, skipped_indices=(5, 9),
                                           lost=40, outage_s=1.6, reconnects=1,
                                           error="interrupted at frame 112"), seq=70,
                               sink_losses={"jsonl": 3, "zmq": 0})
    st = StageStats()
    st.frame_done("cam0", faces=1, dropped=0)
    st.attach(lambda: {"streams": {"cam0": {"state": "retrying", "skipped_frames": 2,
                                            "lost_frames": 40, "reconnects": 1, "outage_s": 1.6,
                                            "last_error": "read from rtsp://cam failed"}},
                       "sinks": {"jsonl": {"written": 9, "dropped": 3, "failed": 0, "queued": 8,
                                           "stalled": True},
                                 "zmq": {"written": 12, "dropped": 0, "failed": 0, "queued": 0,
                                         "stalled": False, "subscription_resets": 1}}})
    return [frame, eos, protocol.stats_message(st.snapshot())]


@pytest.mark.parametrize("msg", reliability_messages(), ids=lambda m: m["type"])
def test_reliability_fields_are_valid_for_schema_and_decoder(msg: dict[str, Any],
                                                             validators: Any) -> None:
    validators[msg["type"]].validate(json.loads(json.dumps(msg)))
    assert protocol.decode(protocol.encode(msg)) == msg


RELIABILITY_BROKEN = [
    ("frame", _set(("skipped_frames",), -1), "skipped_frames"),
    ("frame", _set(("lost_frames",), 1.5), "lost_frames"),
    ("eos", _set(("skipped_frame_indices",), [1, -2]), "skipped_frame_indices"),
    ("eos", _set(("outage_s",), -0.5), "outage_s"),
    ("eos", _set(("sink_losses", "jsonl"), -3), "sink_losses.jsonl"),
    ("stats", _set(("streams", "cam0", "state"), 3), "streams.cam0.state"),
    ("stats", _set(("streams", "cam0", "reconnects"), -1), "streams.cam0.reconnects"),
    ("stats", _set(("sinks", "jsonl", "dropped"), -1), "dropped"),
]


@pytest.mark.parametrize("kind,mutate,field", RELIABILITY_BROKEN,
                         ids=[b[2] + "-" + b[0] for b in RELIABILITY_BROKEN])
def test_broken_reliability_fields_are_refused_by_both(kind: str, mutate: Any, field: str,
                                                       validators: Any) -> None:
    msg = copy.deepcopy({m["type"]: m for m in reliability_messages()}[kind])
    mutate(msg)
    assert list(validators[kind].iter_errors(json.loads(json.dumps(msg))))
    with pytest.raises(ProtocolError, match=field):
        protocol.decode(msgpack.packb(msg, use_bin_type=True))


def test_messages_without_the_reliability_fields_still_validate(validators: Any) -> None:
    """Older producers do not send them: they are optional for schema and decoder alike."""
    frame, eos, _ = reliability_messages()
    for msg, keys in ((frame, ("skipped_frames", "lost_frames")),
                      (eos, ("skipped_frames", "skipped_frame_indices", "lost_frames", "outage_s",
                             "reconnects", "sink_losses"))):
        for k in keys:
            del msg[k]
        validators[msg["type"]].validate(json.loads(json.dumps(msg)))
        protocol.decode(protocol.encode(msg))


def test_gaze_vectors_must_be_unit_vectors() -> None:
    """A rule beyond the JSON Schema: each eye's gaze is a unit vector."""
    msg = frame_message_v2()
    assert msg["schema_minor"] == 1 and msg["faces"][0]["gaze"]["angle_x"] == 0.05
    protocol.validate(msg)
    msg["faces"][0]["gaze"]["eye_0"] = [0.0, 0.0, -2.0]
    with pytest.raises(ProtocolError, match=r"faces\[0\]\.gaze\.eye_0: expected \[x, y, z\] unit"):
        protocol.validate(msg)
