"""Gaze from the iris landmarks (norface_rt.faces.gaze): OpenFace 2.2's sign conventions pinned on
synthetic eyes, then real faces looking into the camera (the photos of shared/faces/, with
single_face.mp4 as it is)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from faces_helpers import as_packet, decode, load_rgb

from norface_rt.faces import gaze as G

EYE_WIDTH_PX = 60.0  # a synthetic eye, corner to corner
MM = G.CANONICAL_EYE_WIDTH_MM / EYE_WIDTH_PX  # millimetres per pixel for it


def _rot_y(deg: float) -> np.ndarray:
    """A head turned about the camera's vertical axis (OpenCV frame): > 0 turns the face
    towards image right."""
    a = math.radians(deg)
    return np.array([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0],
                     [math.sin(a), 0.0, math.cos(a)]])


def synthetic_face(iris_mm: tuple[float, float] = (0.0, 0.0),
                   rotation: np.ndarray | None = None) -> np.ndarray:
    """478 landmarks of a face with two open eyes (head frame, pixels), each iris moved by
    ``iris_mm`` (x to image right, y down, millimetres) from where it sits when the eye looks
    straight ahead, then the whole face turned by ``rotation`` (OpenCV camera frame)."""
    pts = np.zeros((478, 3))
    for corners, lids, iris, neutral, cx in (
            (G.RIGHT_EYE_CORNERS, G.RIGHT_EYE_LIDS, G.RIGHT_IRIS_CENTER, G.NEUTRAL_IRIS_OFFSET[0],
             -100.0),
            (G.LEFT_EYE_CORNERS, G.LEFT_EYE_LIDS, G.LEFT_IRIS_CENTER, G.NEUTRAL_IRIS_OFFSET[1],
             100.0)):
        outer, inner = corners
        side = -1.0 if cx < 0 else 1.0  # the outer corner is towards the temple
        pts[outer] = (cx + side * EYE_WIDTH_PX / 2, 0.0, 0.0)
        pts[inner] = (cx - side * EYE_WIDTH_PX / 2, 0.0, 0.0)
        pts[lids[0]] = (cx, -12.0, 0.0)
        pts[lids[1]] = (cx, 12.0, 0.0)
        pts[iris] = (cx + (neutral[0] + iris_mm[0]) / MM, (neutral[1] + iris_mm[1]) / MM, -5.0)
    r = np.eye(3) if rotation is None else rotation
    return pts @ r.T  # each point r @ p


def test_eyes_looking_straight_into_the_camera_give_zero() -> None:
    g = G.gaze_from_landmarks(synthetic_face(), np.eye(3))
    assert g is not None
    assert g.eye_0 == pytest.approx((0.0, 0.0, -1.0), abs=1e-9)
    assert g.eye_1 == pytest.approx((0.0, 0.0, -1.0), abs=1e-9)
    assert (g.angle_x, g.angle_y) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_openface_signs_right_is_positive_x_down_is_positive_y() -> None:
    right = G.gaze_from_landmarks(synthetic_face((2.0, 0.0)), np.eye(3))  # irises to image right
    down = G.gaze_from_landmarks(synthetic_face((0.0, 2.0)), np.eye(3))  # irises down
    left_up = G.gaze_from_landmarks(synthetic_face((-2.0, -2.0)), np.eye(3))
    assert right is not None and down is not None and left_up is not None
    expected = math.asin(2.0 / G.IRIS_ROTATION_RADIUS_MM)  # 2 mm at a 10 mm radius
    assert right.angle_x == pytest.approx(expected, rel=1e-6) and right.angle_y == pytest.approx(0)
    assert right.eye_0[0] > 0 and right.eye_1[0] > 0 and right.eye_0[2] < 0
    assert down.angle_y == pytest.approx(expected, rel=1e-6) and down.angle_x == pytest.approx(0)
    assert down.eye_0[1] > 0
    assert left_up.angle_x < 0 and left_up.angle_y < 0
    for g in (right, down, left_up):
        for v in (g.eye_0, g.eye_1):
            assert math.hypot(*v) == pytest.approx(1.0)
        mean = np.add(g.eye_0, g.eye_1) / 2  # OpenFace: the angles of the mean vector
        assert g.angle_x == pytest.approx(math.atan2(mean[0], -mean[2]))
        assert g.angle_y == pytest.approx(math.atan2(mean[1], -mean[2]))


def test_a_turned_head_with_eyes_straight_ahead_gazes_where_the_head_points() -> None:
    r = _rot_y(20.0)  # the face turned towards image right
    g = G.gaze_from_landmarks(synthetic_face(rotation=r), r)
    assert g is not None
    assert g.angle_x == pytest.approx(math.radians(20.0), abs=1e-9) and abs(g.angle_y) < 1e-9
    # eyes turned back by the same angle look into the camera again
    back = G.gaze_from_landmarks(
        synthetic_face((-G.IRIS_ROTATION_RADIUS_MM * math.sin(math.radians(20.0)), 0.0), r), r)
    assert back is not None and back.angle_x == pytest.approx(0.0, abs=1e-9)


def test_eye_0_is_the_eye_leftmost_in_the_image() -> None:
    pts = synthetic_face()
    pts[G.LEFT_IRIS_CENTER, 0] += 1.0 / MM  # only the image-right eye (the subject's left) moves
    g = G.gaze_from_landmarks(pts, np.eye(3))
    assert g is not None
    assert g.eye_0 == pytest.approx((0.0, 0.0, -1.0)) and g.eye_1[0] > 0.09


def test_a_closed_eye_or_a_mesh_without_irises_gives_no_gaze() -> None:
    closed = synthetic_face()
    closed[G.RIGHT_EYE_LIDS[0], 1] = closed[G.RIGHT_EYE_LIDS[1], 1] = 0.0
    assert G.gaze_from_landmarks(closed, np.eye(3)) is None
    assert G.gaze_from_landmarks(synthetic_face()[:468], np.eye(3)) is None


# ----------------------------------------------------------------------------- real faces

def _gazes(landmarker: object, paths: list[Path]) -> np.ndarray:
    out = []
    for path in paths:
        faces = landmarker.detect(as_packet(load_rgb(path)))  # type: ignore[attr-defined]
        assert len(faces) == 1 and faces[0].gaze is not None, path
        out.append((faces[0].gaze.angle_x, faces[0].gaze.angle_y))
    return np.array(out)


@pytest.fixture(scope="module")
def one_face_landmarker(landmarker_path: Path):  # noqa: ANN201
    from norface_rt.faces.landmarker import Landmarker

    with Landmarker(landmarker_path, mode="image", max_faces=1) as lm:
        yield lm


@pytest.mark.slow
def test_faces_looking_into_the_camera_read_within_0_15_rad(one_face_landmarker, shared_dir) -> None:
    """The Canada and composite sets (frontal, looking into the camera; not the photos the
    neutral offset was measured on) all within 0.15 rad; the London set's smiling photos of the
    same people (another expression, also not the calibration photos) at least 90 %: some of
    them tilt the head and MediaPipe's iris shows little of the eyes' vertical correction
    (docs/protocol.md, "Gaze")."""
    faces = shared_dir / "faces"
    frontal = sorted((faces / "canada").glob("*.jpg")) + sorted((faces / "composite").glob("*.jpg"))
    if len(frontal) < 40:
        pytest.skip(f"expected the canada and composite photos under {faces}")
    a = _gazes(one_face_landmarker, frontal)
    assert np.abs(a).max() < 0.15, np.abs(a).max(axis=0)
    assert np.abs(np.median(a, axis=0)).max() < 0.05
    smiling = sorted((faces / "london" / "smiling").glob("*.jpg"))[::2]
    b = _gazes(one_face_landmarker, smiling)
    within = float(np.mean(np.abs(b).max(axis=1) < 0.15))
    assert within >= 0.9, within
    assert np.abs(np.median(b, axis=0)).max() < 0.05 and np.abs(b[:, 0]).max() < 0.15


def test_single_face_mp4_gaze(media_dir: Path, landmarker_path: Path) -> None:
    """The man of single_face.mp4 keeps his eyes level (|angle_y| < 0.15 rad in 95 % of the
    frames; a blink reads up to 0.22) and looks a little to the image-left of the lens: his left
    eye's iris sits at its inner corner (visible in the frames), so angle_x reads about
    -0.18 rad, steadily."""
    from norface_rt.faces.landmarker import Landmarker

    frames = decode(media_dir / "single_face.mp4", "single")
    with Landmarker(landmarker_path, mode="video", max_faces=1) as lm:
        gazes = [f.gaze for fr in frames for f in lm.detect(fr)]
    a = np.array([(g.angle_x, g.angle_y) for g in gazes if g is not None])
    assert len(a) >= 70
    assert np.mean(np.abs(a[:, 1]) < 0.15) >= 0.95 and abs(np.median(a[:, 1])) < 0.06
    assert -0.25 < np.median(a[:, 0]) < -0.1 and a[:, 0].std() < 0.05
