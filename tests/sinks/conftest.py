"""Message builders for the sink tests: real messages made the way the pipeline makes them."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.types import FaceResult, FrameResult, HeadPose


def make_face(track_id: int, box: tuple[float, float, float, float], seed: int = 0,
              pose: HeadPose | None = HeadPose(10.0, -5.0, 2.5)) -> FaceResult:
    rng = np.random.default_rng(seed)
    emo = rng.dirichlet(np.ones(len(EMOTION_NAMES)))
    return FaceResult(
        track_id=track_id, box=box, confidence=0.93, pose=pose,
        au_occurrence=dict(zip(AU_NAMES, map(float, rng.random(len(AU_NAMES))))),
        au_intensity=dict(zip(AU_NAMES, map(float, 5.0 * rng.random(len(AU_NAMES))))),
        emotions=dict(zip(EMOTION_NAMES, map(float, emo))),
        top_emotion=EMOTION_NAMES[int(np.argmax(emo))], model_id="norface-tiny-untrained")


def make_frame(seq: int = 0, n_faces: int = 2, stream_id: str = "cam0", untrained: bool = True,
               width: int = 640, height: int = 360, pts: float | None = None,
               error: str | None = None) -> dict[str, Any]:
    faces = [make_face(i + 1, (40.0 + 150 * i, 60.0, 160.0 + 150 * i, 200.0), seed=seq * 31 + i)
             for i in range(n_faces)]
    fr = FrameResult(stream_id=stream_id, seq=seq, frame_index=seq,
                     pts=seq / 25.0 if pts is None else pts, capture_time=time.time(),
                     width=width, height=height, dropped=0, faces=faces, untrained=untrained,
                     timings={"detect": 0.003, "infer": 0.012}, emit_time=time.time(), error=error)
    return fr.to_message()


@pytest.fixture
def frame_msg() -> Callable[..., dict[str, Any]]:
    return make_frame
