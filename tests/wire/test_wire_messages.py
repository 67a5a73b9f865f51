"""The typed wire messages: the same bytes as the message dicts, read back with from_dict, fields
of a newer producer kept, and a read-only mapping view for code written against dicts."""

from __future__ import annotations

import copy
import json

import msgpack
import numpy as np
import pytest

from norface_rt import protocol
from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.sinks.base import BufferPolicy
from norface_rt.stats import StageStats
from norface_rt.types import EndOfStream, FaceQuality, FaceResult, FrameResult, HeadPose
from norface_rt.wire import (
    SCHEMA_VERSION,
    STATS_TOPIC,
    EosMessage,
    ExitCode,
    FrameMessage,
    ProtocolError,
    StatsMessage,
    as_message,
    decode_message,
    encode,
    encode_multipart,
    exit_epilog,
    message_from_dict,
    to_json,
)


def _result(n_faces: int = 2) -> FrameResult:
    rng = np.random.default_rng(3)
    faces = []
    for i in range(n_faces):
        emo = rng.dirichlet(np.ones(len(EMOTION_NAMES)))
        faces.append(FaceResult(
            track_id=i, box=(1.0, 2.0, 30.0, 40.0), confidence=0.9,
            pose=HeadPose(1.0, 2.0, 3.0) if i else None,
            au_occurrence=dict(zip(AU_NAMES, map(float, rng.random(len(AU_NAMES))))),
            au_intensity=dict(zip(AU_NAMES, map(float, 5 * rng.random(len(AU_NAMES))))),
            emotions=dict(zip(EMOTION_NAMES, map(float, emo))),
            top_emotion=EMOTION_NAMES[int(np.argmax(emo))], model_id="m",
            quality=FaceQuality(("small_face",) if i else ()),
            landmarks=rng.random((478, 3)).astype(np.float32) * 100))
    return FrameResult(stream_id="cam0", seq=4, frame_index=9, pts=0.36, capture_time=10.0,
                       width=64, height=48, dropped=0, faces=faces, untrained=False,
                       timings={"detect": 0.002}, emit_time=10.5, source="a/b.jpg")


def test_the_typed_message_encodes_to_the_bytes_of_its_dict() -> None:
    r = _result()
    for kw in ({}, {"landmarks": True}):
        msg = r.to_wire(**kw)
        assert encode(msg) == msgpack.packb(r.to_message(**kw), use_bin_type=True)
        assert encode_multipart(msg)[0] == b"cam0"
    eos = EndOfStream("cam0", 10, skipped=1, skipped_indices=(3,)).to_wire(10, emit_time=1.0)
    assert encode(eos) == protocol.encode(protocol.eos_message(
        EndOfStream("cam0", 10, skipped=1, skipped_indices=(3,)), 10, emit_time=1.0))


def test_from_dict_reads_back_what_to_dict_wrote() -> None:
    msg = _result().to_wire(landmarks=True)
    back = decode_message(encode(msg))
    assert isinstance(back, FrameMessage) and back == msg  # (equal as mappings)
    face = back.faces[1]
    assert face.quality == ("small_face",) and face.pose is not None and face.pose.roll == 3.0
    assert back.faces[0].pose is None and back.faces[0].quality == ()
    assert len(face.landmarks or ()) == 478 and back.source == "a/b.jpg"


def test_fields_of_a_newer_producer_are_kept_and_written_back() -> None:
    d = copy.deepcopy(_result(1).to_message())
    d["blink_ok"] = True
    d["faces"][0]["pupil_mm"] = [0.1, 0.2]
    msg = message_from_dict(d)
    assert msg.extra == {"blink_ok": True} and msg.faces[0].extra == {"pupil_mm": [0.1, 0.2]}
    assert msg.to_dict() == d and "blink_ok" not in FrameMessage.known_fields()


def test_a_version_1_message_reads_with_the_defaults_of_version_2() -> None:
    d = copy.deepcopy(_result(0).to_message())
    for k in ("skipped_frames", "lost_frames", "faces_cut", "source"):
        d.pop(k)
    d["schema_version"] = 1
    msg = message_from_dict(d)
    assert (msg.skipped_frames, msg.faces_cut, msg.source, msg.schema_version) == (0, 0, None, 1)


def test_the_mapping_view_and_the_topic() -> None:
    msg = _result(1).to_wire()
    assert msg["type"] == "frame" and msg.get("faces_cut") == 0 and "faces" in msg
    assert msg["faces"][0]["track_id"] == 0 and dict(msg) == msg.to_dict()
    with pytest.raises(TypeError):
        msg["seq"] = 3  # type: ignore[index]
    stats = StatsMessage.from_snapshot(StageStats().snapshot(), emit_time=2.0)
    assert stats.topic == STATS_TOPIC and stats.fps >= 0 and stats.sinks == {}
    assert list(stats)[-4:] == ["type", "schema_version", "schema_minor", "emit_time"]  # wire order
    assert EosMessage.kind == "eos" and stats.schema_version == SCHEMA_VERSION


def test_a_message_dict_given_to_a_sink_is_read_and_checked() -> None:
    d = _result(1).to_message()
    assert isinstance(as_message(d), FrameMessage)
    msg = as_message(d)
    assert as_message(msg) is msg
    bad = copy.deepcopy(d)
    bad["faces"][0]["confidence"] = 2.0
    with pytest.raises(ProtocolError, match=r"faces\[0\]\.confidence"):
        as_message(bad)
    with pytest.raises(ProtocolError, match="type: expected one of"):
        message_from_dict({"type": ["frame"], "schema_version": 2})
    with pytest.raises(ProtocolError, match="message: expected map"):
        message_from_dict([1, 2])  # type: ignore[arg-type]


def test_the_json_form_is_the_decoded_dict_and_refuses_nan() -> None:
    r = _result()
    msgs = [r.to_wire(landmarks=True), EndOfStream("cam0", 10).to_wire(10, emit_time=1.0),
            StatsMessage.from_snapshot(StageStats().snapshot(), emit_time=2.0)]
    for msg in msgs:
        text = to_json(msg)
        assert "\n" not in text and ": " not in text  # one compact line
        assert json.loads(text) == msgpack.unpackb(encode(msg), raw=False)
    assert to_json(r.to_message()) == to_json(msgs[0].__class__.from_dict(r.to_message()))
    bad = dict(r.to_message(), capture_time=float("nan"))
    with pytest.raises(ValueError):
        to_json(bad)


def test_exit_codes_and_their_epilog_come_from_one_enum() -> None:
    text = exit_epilog({ExitCode.OK: "all fine"}, note="More.")
    assert text.startswith("exit codes: 0 all fine; 1 ") and text.endswith(". More.")
    for code in ExitCode:
        assert f" {int(code)} {code.meaning if code is not ExitCode.OK else 'all fine'}" in text
    assert (int(ExitCode.INTERRUPTED), int(ExitCode.TERMINATED)) == (130, 143)
    assert ExitCode.for_signal(15) == 143


def test_one_buffer_policy_type() -> None:
    assert BufferPolicy.parse("drop", "--push-policy") is BufferPolicy.DROP
    assert BufferPolicy.BLOCK == "block"  # the word users type
    with pytest.raises(ValueError, match=r"--push-policy: expected one of \['block', 'drop'\], "
                                         r"got 'wait'"):
        BufferPolicy.parse("wait", "--push-policy")


def test_an_unhashable_type_field_is_a_protocol_error_not_a_crash() -> None:
    # (a listener must survive whatever arrives: this raised TypeError before)
    data = msgpack.packb({"type": ["frame"], "schema_version": 2}, use_bin_type=True)
    with pytest.raises(ProtocolError, match="type: expected one of"):
        protocol.decode(data)
