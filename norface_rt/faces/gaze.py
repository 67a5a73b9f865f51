"""Eye gaze from MediaPipe's iris landmarks, in OpenFace 2.2's conventions.

Coordinates are OpenFace's (and OpenCV's) camera frame: x to image right, y down, z away from
the camera, so a face looking into the camera has gaze vectors near (0, 0, -1). Per eye, a unit
vector (``gaze_0``: the eye leftmost in the image, ``gaze_1``: the other), and for both eyes
together two angles in radians, as OpenFace computes them from the mean of the two vectors g::

    angle_x = atan2(g.x, -g.z)   > 0: looking towards image right (the subject's left)
    angle_y = atan2(g.y, -g.z)   > 0: looking down

Both are 0 when the eyes look straight into the camera (for a face in the middle of the frame).

How: MediaPipe's 478-point mesh has each iris centre (points 468 and 473) and each eye's corners
(33-133, 263-362), which stay put on the skull whatever the eye does. The landmarks (x, y in
pixels, z MediaPipe's relative depth in the same scale) are turned into the head's own frame with
the head rotation of the facial transformation matrix, so that head turns do not read as eye
movements. There the iris centre's offset from the middle of the eye's corners, beyond the offset
it has when the eye looks straight ahead (:data:`NEUTRAL_IRIS_OFFSET`), is the eye's rotation:
the iris sits :data:`IRIS_ROTATION_RADIUS_MM` in front of the eyeball's centre of rotation, so an
offset of d millimetres turns the eye by asin(d / radius). Millimetres come from the eye's width,
corner to corner, against MediaPipe's canonical face model (:data:`CANONICAL_EYE_WIDTH_MM`). The
eye's direction in the head's frame is then turned by the head rotation into the camera frame.

The neutral offset (the iris centre sits about 2 mm above the line between the corners and
1.5 mm towards the temple) is a property of MediaPipe's mesh, measured once on the London set's
neutral photos (102 people looking into the camera; ``docs/protocol.md``, "Gaze"), and checked
on other photos (tests/faces/test_faces_gaze.py). Known limit, measured there: MediaPipe's iris
barely moves vertically against the eye's corners when a person tilts the head and keeps looking
at the camera, so part of the head's pitch shows in ``angle_y`` (about 0.07 rad of spread on
those photos, against 0.03 rad for ``angle_x``). An eye nearly closed (lid to lid below
:data:`MIN_EYE_OPENING` of its width) gives no gaze (``None``).
"""

from __future__ import annotations

import math

import numpy as np

from norface_rt.types import Gaze

# MediaPipe face-mesh indices. "Right"/"left" are the subject's (the right eye is image-left for
# a face looking at the camera): eye corners (outer, inner), eyelid middles (upper, lower) and
# the iris centres of the 478-point mesh.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYE_LIDS = (159, 145)
LEFT_EYE_LIDS = (386, 374)
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473
IRIS_POINTS = 478  # the mesh with iris points (468 without)

# Corner-to-corner eye width of MediaPipe's canonical face model (its metric mesh, points 33-133),
# and the distance from the eye's centre of rotation to the iris plane (about 13.5 mm behind the
# cornea's apex for the centre of rotation, 3.5 mm for the iris: anatomy texts).
CANONICAL_EYE_WIDTH_MM = 26.56
IRIS_ROTATION_RADIUS_MM = 10.0
# Where the iris centre sits, in the head's frame, relative to the middle of the eye's corners when
# the eye looks straight ahead (x: towards the subject's left, y: down; millimetres), per eye
# (subject's right, left): the mean over MediaPipe meshes of the London set's 102 neutral photos.
NEUTRAL_IRIS_OFFSET: tuple[tuple[float, float], tuple[float, float]] = ((-1.51, -1.97),
                                                                        (1.51, -1.97))
# An eye open less than this fraction of its width (lid to lid) is too closed to read.
MIN_EYE_OPENING = 0.08
_MAX_SIN = 0.95  # offsets beyond 95 % of the radius are clipped (a mesh outlier, not an eye)

# MediaPipe's metric camera frame (OpenGL: y up, z towards the viewer) to OpenCV's: conjugating
# a rotation by it moves the rotation between the two.
GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def head_rotation_cv(matrix: np.ndarray) -> np.ndarray:
    """The head rotation of a facial transformation matrix (MediaPipe, OpenGL camera frame) in
    OpenCV's camera frame: maps the head's own axes (x towards the subject's left, y down, z into
    the head) to the camera's."""
    from norface_rt.faces.pose import head_rotation

    return GL_TO_CV @ head_rotation(matrix) @ GL_TO_CV


# The points one eye's gaze is read from, in this order: corners (outer, inner), lids (upper,
# lower), iris centre; for the subject's right eye, then the left.
_EYE_POINTS = (*RIGHT_EYE_CORNERS, *RIGHT_EYE_LIDS, RIGHT_IRIS_CENTER,
               *LEFT_EYE_CORNERS, *LEFT_EYE_LIDS, LEFT_IRIS_CENTER)


def _eye_direction(q: np.ndarray, neutral: tuple[float, float]) -> np.ndarray | None:
    """One eye's gaze in the head's frame from its five head-frame points ``q`` (corners, lids,
    iris; see :data:`_EYE_POINTS`); None when the eye is nearly closed."""
    outer, inner, upper, lower, iris = q
    width = math.dist(outer, inner)
    if not width > 0 or math.dist(upper, lower) < MIN_EYE_OPENING * width:
        return None
    mm = CANONICAL_EYE_WIDTH_MM / width  # millimetres per landmark unit for this eye
    sx = ((iris[0] - (outer[0] + inner[0]) / 2.0) * mm - neutral[0]) / IRIS_ROTATION_RADIUS_MM
    sy = ((iris[1] - (outer[1] + inner[1]) / 2.0) * mm - neutral[1]) / IRIS_ROTATION_RADIUS_MM
    norm = math.hypot(sx, sy)
    if norm > _MAX_SIN:
        sx, sy, norm = sx * _MAX_SIN / norm, sy * _MAX_SIN / norm, _MAX_SIN
    return np.array([sx, sy, -math.sqrt(1.0 - norm * norm)])


def gaze_from_landmarks(landmarks: np.ndarray, rotation_cv: np.ndarray) -> Gaze | None:
    """The gaze of a face from its 478 landmarks (x, y pixels, z MediaPipe's depth in the same
    scale) and its head rotation in OpenCV's camera frame (:func:`head_rotation_cv`); None when a
    mesh without iris points is given or either eye is too closed to read."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < IRIS_POINTS or pts.shape[1] < 3:
        return None
    r = np.asarray(rotation_cv, dtype=np.float64)
    # each row r.T @ p: the head's frame (its origin does not matter here); plain floats, as the
    # face stage runs this for every face of every frame
    q = (pts[list(_EYE_POINTS), :3] @ r).tolist()
    right = _eye_direction(q[:5], NEUTRAL_IRIS_OFFSET[0])
    left = _eye_direction(q[5:], NEUTRAL_IRIS_OFFSET[1])
    if right is None or left is None:
        return None
    g_right, g_left = r @ right, r @ left
    # eye 0 is the one leftmost in the image (OpenFace's order), whatever way the head is turned
    if pts[RIGHT_IRIS_CENTER, 0] <= pts[LEFT_IRIS_CENTER, 0]:
        g0, g1 = g_right, g_left
    else:
        g0, g1 = g_left, g_right
    mean = (g0 + g1) / 2.0
    first, second = ((RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER) if g0 is g_right
                     else (LEFT_IRIS_CENTER, RIGHT_IRIS_CENTER))
    return Gaze(eye_0=(float(g0[0]), float(g0[1]), float(g0[2])),
                eye_1=(float(g1[0]), float(g1[1]), float(g1[2])),
                angle_x=math.atan2(float(mean[0]), -float(mean[2])),
                angle_y=math.atan2(float(mean[1]), -float(mean[2])),
                pupil_0=(float(pts[first, 0]), float(pts[first, 1])),
                pupil_1=(float(pts[second, 0]), float(pts[second, 1])))
