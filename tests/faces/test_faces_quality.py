"""Per-face quality flags: each threshold on constructed faces, and real faces come out clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faces_helpers import as_packet, load_rgb
from norface_rt.faces.quality import (
    MAX_PITCH,
    MAX_YAW,
    MIN_CONFIDENCE,
    SMALL_FACE_IOD,
    QUALITY_ISSUES,
    assess,
)
from norface_rt.types import Face, HeadPose


def face(iod: float = 60.0, yaw: float = 0.0, pitch: float = 0.0, confidence: float = 0.9,
         pose: bool = True) -> Face:
    pts = np.array([[100.0, 100.0], [100.0 + iod, 100.0], [130.0, 130.0], [110.0, 150.0],
                    [150.0, 150.0]])
    return Face(box=(80.0, 80.0, 200.0, 200.0), confidence=confidence,
                landmarks=np.zeros((478, 3), np.float32), points5=pts,
                pose=HeadPose(yaw, pitch, 0.0) if pose else None)


@pytest.mark.parametrize("kw,issues", [
    ({}, ()),
    ({"iod": SMALL_FACE_IOD - 1}, ("small_face",)),
    ({"iod": SMALL_FACE_IOD + 1}, ()),
    ({"yaw": MAX_YAW + 5}, ("extreme_pose",)),
    ({"yaw": -(MAX_YAW + 5)}, ("extreme_pose",)),
    ({"pitch": MAX_PITCH + 1}, ("extreme_pose",)),
    ({"pitch": MAX_PITCH - 1, "yaw": MAX_YAW - 1}, ()),
    ({"pose": False, "yaw": 80}, ()),  # unknown pose is not flagged
    ({"confidence": MIN_CONFIDENCE - 0.01}, ("low_confidence",)),
    ({"iod": 10, "yaw": 60, "confidence": 0.1}, ("small_face", "extreme_pose", "low_confidence")),
])
def test_each_threshold(kw: dict, issues: tuple[str, ...]) -> None:
    q = assess(face(**kw))
    assert q.issues == issues and q.ok == (not issues)
    assert set(q.issues) <= set(QUALITY_ISSUES)
    assert q.to_dict() == {"ok": not issues, "issues": list(issues)}


def test_real_group_photo_faces_are_usable(landmarker_path: Path, media_dir: Path) -> None:
    from norface_rt.faces.landmarker import Landmarker

    with Landmarker(landmarker_path, mode="image", max_faces=8, tiling=1.0) as lm:
        faces = lm.detect(as_packet(load_rgb(media_dir / "multi_face.jpg"), 0))
    assert len(faces) == 5
    assert all(assess(f).ok for f in faces), [assess(f) for f in faces]
