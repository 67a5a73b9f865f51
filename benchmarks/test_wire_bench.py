"""Encoding and decoding one frame message: the wire codec as it is (msgpack + the hand-written
validator) and, where msgspec is installed, msgspec Structs encoding the same bytes.

Run: python -m pytest benchmarks/test_wire_bench.py -q --benchmark-columns=median,min,rounds
(msgspec is not a dependency: ``pip install msgspec`` to add its rows; docs/protocol.md,
"Validation", has a measured table and why the codec stays as it is).

Three messages: one face, five faces, and one face with the optional landmarks and blendshapes
(``--landmarks --blendshapes``, 30 KB). Encoding starts from the pipeline's FrameResult, as the
publish thread does; decoding from the payload bytes, as a listener does.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, BLENDSHAPE_NAMES, EMOTION_NAMES
from norface_rt.types import FaceQuality, FaceResult, FrameResult, HeadPose, Stage
from norface_rt.wire import decode, decode_message, encode

CASES = {"1-face": (1, False), "5-faces": (5, False), "1-face-landmarks": (1, True)}
HAVE_MSGSPEC = importlib.util.find_spec("msgspec") is not None


def _result(n_faces: int) -> FrameResult:
    rng = np.random.default_rng(0)
    faces = []
    for i in range(n_faces):
        emo = rng.dirichlet(np.ones(len(EMOTION_NAMES)))
        faces.append(FaceResult(
            track_id=i, box=(10.0, 20.0, 110.0, 140.0), confidence=0.9,
            pose=HeadPose(1.0, 2.0, 3.0),
            au_occurrence=dict(zip(AU_NAMES, map(float, rng.random(len(AU_NAMES))))),
            au_intensity=dict(zip(AU_NAMES, map(float, 5 * rng.random(len(AU_NAMES))))),
            emotions=dict(zip(EMOTION_NAMES, map(float, emo))),
            top_emotion=EMOTION_NAMES[int(np.argmax(emo))], model_id="m", quality=FaceQuality(),
            landmarks=(rng.random((478, 3)) * 300).astype(np.float32),
            blendshapes=dict(zip(BLENDSHAPE_NAMES, map(float, rng.random(len(BLENDSHAPE_NAMES)))))))
    return FrameResult(stream_id="cam0", seq=3, frame_index=7, pts=0.28, capture_time=1000.0,
                       width=640, height=360, dropped=0, untrained=False, faces=faces,
                       timings={Stage.DECODE: 0.004, Stage.DETECT: 0.008, Stage.NORMALIZE: 0.02},
                       emit_time=1000.1)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, FrameResult, bool]:
    n, rich = CASES[request.param]
    return request.param, _result(n), rich


def test_encode_wire(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """FrameResult -> typed message -> validated msgpack (the ZeroMQ sink's work per frame)."""
    name, result, rich = case
    data = benchmark(lambda: encode(result.to_wire(landmarks=rich, blendshapes=rich)))
    benchmark.extra_info.update({"message": name, "bytes": len(data)})


def test_decode_wire(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """Payload -> validated dict (what ``norface-rt listen`` does per message)."""
    name, result, rich = case
    data = encode(result.to_wire(landmarks=rich, blendshapes=rich))
    benchmark(decode, data)
    benchmark.extra_info["message"] = name


def test_decode_wire_typed(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """Payload -> validated typed message."""
    name, result, rich = case
    data = encode(result.to_wire(landmarks=rich, blendshapes=rich))
    benchmark(decode_message, data)
    benchmark.extra_info["message"] = name


# ---- msgspec, for comparison (same bytes: checked below) -------------------------------------
# (module level: msgspec reads these annotations from the module's names)

if HAVE_MSGSPEC:
    import msgspec
    from msgspec import UNSET, Meta, Struct, UnsetType

    Prob = Annotated[float, Meta(ge=0.0, le=1.0)]
    NonNeg = Annotated[float, Meta(ge=0.0)]
    Count = Annotated[int, Meta(ge=0)]
    Degrees = Annotated[float, Meta(ge=-180, le=180)]
    AuName = Annotated[str, Meta(pattern="^AU[0-9]{2}$")]
    Point = Annotated[list[float], Meta(min_length=3, max_length=3)]

    class MsPose(Struct):
        yaw: Degrees
        pitch: Degrees
        roll: Degrees

    class MsQuality(Struct):
        ok: bool
        issues: list[str]

    class MsFace(Struct):
        track_id: Annotated[int, Meta(ge=-1)]
        box: Annotated[list[float], Meta(min_length=4, max_length=4)]
        confidence: Prob
        pose: MsPose | None
        au_occurrence: dict[AuName, Prob]
        au_intensity: dict[AuName, NonNeg]
        emotions: dict[str, Prob]
        top_emotion: str
        model_id: str
        quality: MsQuality | UnsetType = UNSET
        landmarks: list[Point] | UnsetType = UNSET
        blendshapes: dict[str, Prob] | UnsetType = UNSET

    class MsFrame(Struct, tag="frame", tag_field="type"):
        schema_version: int
        stream_id: Annotated[str, Meta(min_length=1)]
        seq: Count
        frame_index: Count
        pts: float | None
        capture_time: NonNeg
        emit_time: NonNeg
        width: Count
        height: Count
        dropped_frames: Count
        skipped_frames: Count
        lost_frames: Count
        untrained: bool
        error: str | None
        timings_ms: dict[str, NonNeg]
        faces: list[MsFace]
        faces_cut: Count
        source: str | UnsetType = UNSET

    def _struct(r: FrameResult, rich: bool) -> MsFrame:
        msg = r.to_wire(landmarks=rich, blendshapes=rich)
        faces = [MsFace(track_id=f.track_id, box=list(f.box), confidence=f.confidence,
                        pose=None if f.pose is None else MsPose(*f.pose),
                        au_occurrence=dict(f.au_occurrence), au_intensity=dict(f.au_intensity),
                        emotions=dict(f.emotions), top_emotion=f.top_emotion,
                        model_id=f.model_id,
                        quality=MsQuality(not f.quality, list(f.quality or ())),
                        landmarks=[list(p) for p in f.landmarks] if f.landmarks else UNSET,
                        blendshapes=dict(f.blendshapes) if f.blendshapes else UNSET)
                 for f in msg.faces]
        return MsFrame(schema_version=msg.schema_version, stream_id=msg.stream_id, seq=msg.seq,
                       frame_index=msg.frame_index, pts=msg.pts, capture_time=msg.capture_time,
                       emit_time=msg.emit_time, width=msg.width, height=msg.height,
                       dropped_frames=msg.dropped_frames, skipped_frames=msg.skipped_frames,
                       lost_frames=msg.lost_frames, untrained=msg.untrained, error=msg.error,
                       timings_ms=dict(msg.timings_ms), faces=faces, faces_cut=msg.faces_cut)


@pytest.mark.skipif(not HAVE_MSGSPEC, reason="msgspec is not installed (not a dependency)")
def test_encode_msgspec(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """FrameResult -> Struct -> msgpack with msgspec (types check values as they are built
    only when decoding, so this encodes without validating)."""
    name, result, rich = case
    enc = msgspec.msgpack.Encoder()
    assert enc.encode(_struct(result, rich)) == encode(result.to_wire(landmarks=rich,
                                                                     blendshapes=rich))
    benchmark(lambda: enc.encode(_struct(result, rich)))
    benchmark.extra_info["message"] = name


@pytest.mark.skipif(not HAVE_MSGSPEC, reason="msgspec is not installed (not a dependency)")
def test_decode_msgspec(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """Payload -> validated Struct with msgspec."""
    name, result, rich = case
    data = encode(result.to_wire(landmarks=rich, blendshapes=rich))
    dec = msgspec.msgpack.Decoder(MsFrame)
    benchmark(dec.decode, data)
    benchmark.extra_info["message"] = name
