"""Head pose convention on synthetic rotations and on real faces."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.faces.pose import head_pose_from_matrix, rotation_from_angles
from faces_helpers import as_packet, load_rgb

NOSE = np.array([0.0, 0.0, 1.0])  # canonical face looks along +z (towards the camera)
UP = np.array([0.0, 1.0, 0.0])


ANGLES = list(itertools.product((-50, -10, 0, 25), (-35, 0, 20), (-30, 0, 15)))


@pytest.mark.parametrize("yaw,pitch,roll", ANGLES)
def test_round_trip_known_angles(yaw: float, pitch: float, roll: float) -> None:
    m = np.eye(4)
    m[:3, :3] = rotation_from_angles(yaw, pitch, roll) * 1.7  # MediaPipe matrices may carry scale
    m[:3, 3] = (3.0, -2.0, -40.0)
    p = head_pose_from_matrix(m)
    assert (p.yaw, p.pitch, p.roll) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def test_signs_mean_what_the_docs_say() -> None:
    # yaw > 0: subject turns to their left = nose towards image right (+x).
    assert (rotation_from_angles(30, 0, 0) @ NOSE)[0] > 0.4
    # pitch > 0: looking up = nose towards image top (+y in camera space).
    assert (rotation_from_angles(0, 30, 0) @ NOSE)[1] > 0.4
    # roll > 0: top of the head towards image right (subject's left shoulder), clockwise on screen.
    assert (rotation_from_angles(0, 0, 30) @ UP)[0] > 0.4
    # Single-axis matrices written out by hand, independent of rotation_from_angles.
    a = math.radians(20)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    assert head_pose_from_matrix(ry).yaw == pytest.approx(20.0)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    assert head_pose_from_matrix(rx).pitch == pytest.approx(-20.0)  # +x rotation tips the nose down
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    assert head_pose_from_matrix(rz).roll == pytest.approx(-20.0)  # counter-clockwise on screen


def test_bad_matrices_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"shape \(4, 4\) or \(3, 3\), got \(2, 2\)"):
        head_pose_from_matrix(np.eye(2))
    with pytest.raises(ValueError, match="finite"):
        head_pose_from_matrix(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="det > 0"):
        head_pose_from_matrix(np.diag([1.0, 1.0, -1.0]))


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper_512x512.jpg"])
def test_real_frontal_faces_are_roughly_frontal(image_landmarker, media_dir: Path, name: str) -> None:
    faces = image_landmarker.detect(as_packet(load_rgb(media_dir / name)))
    assert len(faces) == 1
    pose = faces[0].pose
    assert pose is not None
    assert abs(pose.yaw) < 25 and abs(pose.pitch) < 25 and abs(pose.roll) < 15


def test_real_face_rotation_and_mirror_move_angles_as_documented(image_landmarker,
                                                                 media_dir: Path) -> None:
    img = load_rgb(media_dir / "single_face.jpg")
    base = image_landmarker.detect(as_packet(img))[0]
    h, w = img.shape[:2]
    # cv2 angle > 0 rotates the picture counter-clockwise on screen -> roll decreases by that much.
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 15.0, 1.0), (w, h))
    turned = image_landmarker.detect(as_packet(rot))[0]
    assert turned.pose.roll - base.pose.roll == pytest.approx(-15.0, abs=3.0)
    # Roll agrees with the eye line in pixel coordinates (y down).
    (lx, ly), (rx, ry) = turned.points5[0], turned.points5[1]
    assert turned.pose.roll == pytest.approx(math.degrees(math.atan2(ry - ly, rx - lx)), abs=4.0)
    # A mirror image turns the head the other way and tilts it the other way.
    mirrored = image_landmarker.detect(as_packet(np.ascontiguousarray(img[:, ::-1])))[0]
    assert mirrored.pose.yaw == pytest.approx(-base.pose.yaw, abs=3.0)
    assert mirrored.pose.roll == pytest.approx(-base.pose.roll, abs=3.0)
    assert abs(base.pose.yaw) > 4.0  # the photo is slightly turned, so the mirror test has teeth
    # Yaw sign vs geometry: nose tip on the side the face turns to (image right for yaw > 0).
    for f in (base, mirrored):
        eye_mid = (f.points5[0, 0] + f.points5[1, 0]) / 2
        assert np.sign(f.points5[2, 0] - eye_mid) == np.sign(f.pose.yaw)


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("yaw,pitch,roll", ANGLES)
def test_openface_rotation_is_the_same_rotation_in_openfaces_frame(yaw, pitch, roll) -> None:
    from norface_rt.faces.pose import openface_rotation

    rx, ry, rz = openface_rotation(yaw, pitch, roll)
    # OpenFace: R = Rx Ry Rz in the camera frame x right, y down, z away from the camera.
    flip = np.diag([1.0, -1.0, -1.0])
    ours_in_cv = flip @ rotation_from_angles(yaw, pitch, roll) @ flip
    np.testing.assert_allclose(_rx(rx) @ _ry(ry) @ _rz(rz), ours_in_cv, atol=1e-12)
    # In that frame a frontal face looks along -z: the nose direction after rotation says what
    # the signs mean (y down: a positive pose_Rx moves the nose down, i.e. looking down).
    nose = _rx(rx) @ _ry(ry) @ _rz(rz) @ np.array([0.0, 0.0, -1.0])
    if pitch and not roll:  # (roll, applied last, turns the nose direction within the image)
        assert np.sign(nose[1]) == -np.sign(pitch)  # looking up (pitch > 0): nose to image top


@pytest.mark.parametrize("angles,expected", [
    ((20.0, 0.0, 0.0), (0.0, -20.0, 0.0)),   # turned to the subject's left: pose_Ry < 0
    ((0.0, 20.0, 0.0), (-20.0, 0.0, 0.0)),   # looking up: pose_Rx < 0
    ((0.0, 0.0, 20.0), (0.0, 0.0, 20.0)),    # clockwise in the image: pose_Rz > 0
])
def test_openface_signs_of_single_axis_turns(angles, expected) -> None:
    from norface_rt.faces.pose import openface_rotation

    got = [math.degrees(v) for v in openface_rotation(*angles)]
    assert got == pytest.approx(list(expected), abs=1e-9)
