"""Encoding and decoding one frame message, as the publish thread and a listener do.

Run: python -m pytest benchmarks/test_wire_bench.py -q --benchmark-columns=median,min,rounds
(docs/protocol.md, "Validation", has measured figures, set against msgspec's).

The faces are real: the packaged model's results on the five people of ``multi_face.jpg``.
Three messages: one face, five faces, and one face with the optional landmarks and blendshapes
(``--landmarks --blendshapes``, about 16 KB). Encoding starts from the pipeline's FrameResult
(typed message, validation, msgpack); decoding from the payload bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from norface_rt.types import FaceResult, FrameResult, Stage
from norface_rt.wire import decode, decode_message, encode

CASES = {"1-face": (1, False), "5-faces": (5, False), "1-face-landmarks": (1, True)}


@pytest.fixture(scope="module")
def faces(default_model_dir: Path, landmarker_path: Path, media_dir: Path) -> list[FaceResult]:
    import norface_rt

    with norface_rt.Analyzer(default_model_dir, landmarker_path, max_faces=8) as analyzer:
        found = analyzer.analyze_image(media_dir / "multi_face.jpg")
    assert len(found) >= 5, f"expected the 5 faces of multi_face.jpg, found {len(found)}"
    return found


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, faces: list[FaceResult]) -> tuple[str, FrameResult, bool]:
    n, rich = CASES[request.param]
    result = FrameResult(stream_id="cam0", seq=3, frame_index=7, pts=0.28, capture_time=1000.0,
                         width=640, height=360, dropped=0, untrained=False,
                         faces=[dataclasses.replace(f) for f in faces[:n]],
                         timings={Stage.DECODE: 0.004, Stage.DETECT: 0.008}, emit_time=1000.1)
    return request.param, result, rich


def test_encode(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """FrameResult -> typed message -> validated msgpack (the ZeroMQ sink's work per frame)."""
    name, result, rich = case
    data = benchmark(lambda: encode(result.to_wire(landmarks=rich, blendshapes=rich)))
    benchmark.extra_info.update({"message": name, "bytes": len(data)})


def test_decode(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """Payload -> validated dict (what ``norface-rt listen`` does per message)."""
    name, result, rich = case
    data = encode(result.to_wire(landmarks=rich, blendshapes=rich))
    assert benchmark(decode, data) == result.to_message(landmarks=rich, blendshapes=rich)
    benchmark.extra_info["message"] = name


def test_decode_typed(benchmark: Any, case: tuple[str, FrameResult, bool]) -> None:
    """Payload -> validated typed message."""
    name, result, rich = case
    data = encode(result.to_wire(landmarks=rich, blendshapes=rich))
    assert len(benchmark(decode_message, data).faces) == len(result.faces)
    benchmark.extra_info["message"] = name
