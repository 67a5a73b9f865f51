"""Head pose (yaw, pitch, roll in degrees) from MediaPipe's facial transformation matrix.

Frame: MediaPipe's metric camera space, as in OpenGL: x points to image right, y to image up, z
towards the viewer (the camera looks along -z); the canonical face looks along +z, i.e. into the
camera. The matrix maps the canonical face into that space, so its 3x3 block is the head rotation R.

Convention (all angles from the subject's point of view, 0/0/0 = looking straight into the camera):

* ``yaw``   > 0: the subject turns to *their* left, the nose moves towards image right.
* ``pitch`` > 0: the subject looks up, the nose moves towards the image top.
* ``roll``  > 0: the head tilts towards the subject's left shoulder, i.e. clockwise as seen in the
  image; in pixel coordinates (y down) ``roll`` is about the angle of the eye line,
  ``atan2(y_right_eye - y_left_eye, x_right_eye - x_left_eye)`` with image-left/right eyes.

Composition: ``R = Rz(-roll) @ Ry(yaw) @ Rx(-pitch)`` (pitch applied first, roll last, all about the
fixed camera axes). Decomposition is unique for |yaw| < 90 degrees, which covers every face the
landmarker can find.
"""

from __future__ import annotations

import math

import numpy as np

from norface_rt.types import HeadPose


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of :func:`head_pose_from_matrix` (degrees in, 3x3 rotation out).

    Exists so tests and the synthetic renderer can build poses with exactly this convention.
    """
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    return _rz(-r) @ _ry(y) @ _rx(-p)


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    # MediaPipe's matrix may carry a uniform scale and float noise; project onto SO(3) so the angle
    # formulas (which assume orthonormal columns) stay valid.
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1.0
        r = u @ vt
    return r


def head_rotation(m: np.ndarray) -> np.ndarray:
    """The head rotation of a 4x4 (or 3x3) face-to-camera transform (MediaPipe's OpenGL frame),
    projected onto SO(3); a ValueError for a matrix that holds none."""
    a = np.asarray(m, dtype=np.float64)
    if a.shape not in ((4, 4), (3, 3)):
        raise ValueError(f"transformation matrix must have shape (4, 4) or (3, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("transformation matrix must be finite, got NaN or inf entries")
    rot = a[:3, :3]
    if np.linalg.det(rot) <= 0:
        raise ValueError("transformation matrix rotation block must have det > 0, got "
                         f"{np.linalg.det(rot):.3g}")
    return _nearest_rotation(rot)


def head_pose_from_matrix(m: np.ndarray) -> HeadPose:
    """Decompose a 4x4 (or 3x3) face-to-camera transform into the convention of this module."""
    return head_pose_from_rotation(head_rotation(m))


def head_pose_from_rotation(r: np.ndarray) -> HeadPose:
    """:func:`head_pose_from_matrix` of a rotation already projected (:func:`head_rotation`)."""
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    rx = math.atan2(r[2, 1], r[2, 2])
    rz = math.atan2(r[1, 0], r[0, 0])
    return HeadPose(yaw=math.degrees(yaw), pitch=-math.degrees(rx), roll=-math.degrees(rz))


# OpenCV / OpenFace camera frame from MediaPipe's OpenGL one: x right, y down, z away from the
# camera (a rotation by 180 degrees about x). Conjugating by it maps a head rotation between them.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def openface_rotation(yaw: float, pitch: float, roll: float) -> tuple[float, float, float]:
    """The same head rotation as OpenFace 2.0's ``pose_Rx, pose_Ry, pose_Rz`` (radians).

    OpenFace expresses the rotation in the camera frame of OpenCV (x right, y down, z away from
    the camera; a frontal face looks along -z) as Euler angles with ``R = Rx @ Ry @ Rz``. The
    rotation built from this module's angles is moved into that frame and decomposed that way,
    so the result is exact at every angle, not only the small-angle signs. Near the frontal pose
    ``pose_Rx ~ -pitch`` (positive: looking down), ``pose_Ry ~ -yaw`` (positive: turning to the
    subject's right, the nose moving towards image left) and ``pose_Rz ~ roll`` (positive:
    clockwise in the image).
    """
    r = _GL_TO_CV @ rotation_from_angles(yaw, pitch, roll) @ _GL_TO_CV
    rx = math.atan2(-r[1, 2], r[2, 2])
    ry = math.asin(max(-1.0, min(1.0, r[0, 2])))
    rz = math.atan2(-r[0, 1], r[0, 0])
    return rx, ry, rz
