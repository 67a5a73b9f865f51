"""The OpenFace-style table (``--csv-style openface``): OpenFace 2.2's columns, order and number
formats, filled from our results.

Checked column by column against OpenFace 2.2's ``RecorderCSV.cpp`` (FeatureExtraction, a
sequence) and its wiki's "Output Format"; ``docs/protocol.md`` has the table. For the outputs we
have, the columns are OpenFace's, in its order and with its decimals::

    frame, face_id, timestamp, confidence, success,
    gaze_0_x, gaze_0_y, gaze_0_z, gaze_1_x, gaze_1_y, gaze_1_z, gaze_angle_x, gaze_angle_y,
    pose_Tx, pose_Ty, pose_Tz, pose_Rx, pose_Ry, pose_Rz,
    x_0..x_67, y_0..y_67, X_0..X_67, Y_0..Y_67, Z_0..Z_67,
    AUxx_r ... (sorted by name), AUxx_c ... (sorted by name)

then ours, after everything OpenFace writes: ``emotion_<name>``, ``top_emotion``, ``quality``,
``source``, and with ``--landmarks`` MediaPipe's own 478 points as ``mp_x_i, mp_y_i, mp_z_i``,
with ``--blendshapes`` the ``blendshape_<name>`` scores. Not written (we do not measure them):
OpenFace's 56 eye-region landmarks (``eye_lmk_*``) and its shape-model parameters (``p_*``).

Where the values come from: gaze (:mod:`norface_rt.faces.gaze`); ``pose_T*`` (head position in
mm) and ``X/Y/Z_i`` (:mod:`norface_rt.faces.camera`); ``pose_R*`` (the head rotation in
OpenFace's axes, :func:`norface_rt.faces.pose.openface_rotation`); ``x/y_i`` the 68 iBUG points
of MediaPipe's mesh (:mod:`norface_rt.faces.ibug68`); the AUs from the model, plus the two
OpenFace writes that our models do not estimate, from MediaPipe's blendshapes
(:func:`blendshape_aus`): ``AU45`` (blink) and ``AU28_c`` (lip suck).

A frame without a face (or a file that could not be read) is one row with ``success`` 0 and
numbers, not empty cells, everywhere OpenFace writes numbers (``face_id`` 0, zeros), so integer
columns stay integers; stills have ``timestamp`` 0, as OpenFace writes for images. Numbers have
OpenFace's fixed decimals (:data:`DECIMALS`; ``AUxx_c`` as 0.0 / 1.0, as OpenFace writes them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from norface_rt.config import BLENDSHAPE_NAMES, LANDMARK_COUNT
from norface_rt.types import FaceResult, FrameResult

IBUG_POINTS = 68
# The AUs OpenFace 2.2 writes that no model of ours estimates, read from MediaPipe's blendshapes.
BLENDSHAPE_AU_INTENSITY = ("AU45",)
BLENDSHAPE_AU_OCCURRENCE = ("AU28", "AU45")
# A blendshape score at least this high counts as the AU present (AUxx_c = 1).
BLENDSHAPE_PRESENT = 0.5

HEAD = ("frame", "face_id", "timestamp", "confidence", "success")
GAZE = ("gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z", "gaze_angle_x",
        "gaze_angle_y")
POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
INT_COLUMNS = frozenset({"frame", "face_id", "success"})
# Decimals of each kind of column, as RecorderCSV.cpp writes them (and ours: emotions and
# blendshapes 4, MediaPipe's points 1 as on the wire).
DECIMALS: dict[str, int] = {
    "timestamp": 3, "confidence": 2, **{c: 6 for c in GAZE[:6]}, "gaze_angle_x": 3,
    "gaze_angle_y": 3, "pose_Tx": 1, "pose_Ty": 1, "pose_Tz": 1, "pose_Rx": 3, "pose_Ry": 3,
    "pose_Rz": 3,
}
_DECIMALS_BY_PREFIX = (("x_", 1), ("y_", 1), ("X_", 1), ("Y_", 1), ("Z_", 1), ("mp_", 1),
                       ("emotion_", 4), ("blendshape_", 4))
_DECIMALS_BY_SUFFIX = (("_r", 2), ("_c", 1))


def decimals(column: str) -> int | None:
    """How many decimals OpenFace writes for ``column`` (None: an integer or text column)."""
    if column in DECIMALS:
        return DECIMALS[column]
    if column in INT_COLUMNS:
        return None
    for prefix, d in _DECIMALS_BY_PREFIX:
        if column.startswith(prefix):
            return d
    if column.startswith("AU"):
        for suffix, d in _DECIMALS_BY_SUFFIX:
            if column.endswith(suffix):
                return d
    return None


def au_columns(au_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The AUs of the ``_r`` and the ``_c`` blocks: the model's plus the blendshape AUs it does
    not have, each block sorted by name as OpenFace sorts its own."""
    reg = sorted(set(au_names) | set(BLENDSHAPE_AU_INTENSITY))
    cls = sorted(set(au_names) | set(BLENDSHAPE_AU_OCCURRENCE))
    return reg, cls


def columns(au_names: Sequence[str], emotion_names: Sequence[str], *, landmarks: bool,
            blendshapes: bool) -> list[str]:
    reg, cls = au_columns(au_names)
    points = [f"{axis}_{i}" for axis in ("x", "y", "X", "Y", "Z") for i in range(IBUG_POINTS)]
    mp = ([f"mp_{axis}_{i}" for axis in "xyz" for i in range(LANDMARK_COUNT)]
          if landmarks else [])
    bss = [f"blendshape_{b}" for b in BLENDSHAPE_NAMES] if blendshapes else []
    return [*HEAD, *GAZE, *POSE, *points, *(f"{a}_r" for a in reg), *(f"{a}_c" for a in cls),
            *(f"emotion_{e}" for e in emotion_names), "top_emotion", "quality", "source", *mp,
            *bss]


def blendshape_aus(blendshapes: Mapping[str, float] | None) -> tuple[dict[str, float],
                                                                      dict[str, float]]:
    """``AU45`` (blink) intensity and occurrence and ``AU28`` (lip suck) occurrence from
    MediaPipe's blendshapes, on the project's scale (docs/au_mapping.md: intensity = 5 x score):
    a blink closes both eyes, so AU45 takes the less closed eye (``eyeBlinkLeft/Right``); a lip
    suck rolls either lip in (``mouthRollLower/Upper``). Present when the score reaches
    :data:`BLENDSHAPE_PRESENT`. Empty maps without blendshapes."""
    if not blendshapes:
        return {}, {}
    blink = min(float(blendshapes.get("eyeBlinkLeft", 0.0)),
                float(blendshapes.get("eyeBlinkRight", 0.0)))
    suck = max(float(blendshapes.get("mouthRollLower", 0.0)),
               float(blendshapes.get("mouthRollUpper", 0.0)))
    return ({"AU45": 5.0 * blink},
            {"AU45": float(blink >= BLENDSHAPE_PRESENT), "AU28": float(suck >= BLENDSHAPE_PRESENT)})


Row = dict[str, Any]


def _round(v: float, column: str) -> float:
    d = decimals(column)
    return float(v) if d is None else round(float(v), d)


def empty_row(frame: FrameResult, cols: Sequence[str]) -> Row:
    """A frame without a face: ``success`` 0, zeros where OpenFace writes numbers."""
    row: Row = {c: 0.0 for c in cols if decimals(c) is not None}
    row.update(frame=frame.frame_index + 1, face_id=0, success=0,
               timestamp=_timestamp(frame), confidence=0.0, top_emotion="", quality="",
               source=frame.source)
    return row


def _timestamp(frame: FrameResult) -> float:
    return 0.0 if frame.pts is None else round(float(frame.pts), DECIMALS["timestamp"])


def face_row(frame: FrameResult, face: FaceResult, *, au_names: Sequence[str],
             emotion_names: Sequence[str], occurrence_threshold: float, landmarks: bool,
             blendshapes: bool, quality: str | None) -> Row:
    """One face's row (values rounded to OpenFace's decimals, as the file has them)."""
    from norface_rt.faces.camera import landmarks_mm
    from norface_rt.faces.ibug68 import IBUG68_INDEX
    from norface_rt.faces.pose import openface_rotation

    row: Row = {"frame": frame.frame_index + 1, "face_id": int(face.track_id),
                "timestamp": _timestamp(frame),
                "confidence": round(float(face.confidence), DECIMALS["confidence"]),
                "success": 1, "quality": quality, "source": frame.source}
    g = face.gaze
    vals = ((*g.eye_0, *g.eye_1, g.angle_x, g.angle_y) if g is not None else (0.0,) * 8)
    row.update({c: _round(v, c) for c, v in zip(GAZE, vals)})
    rx = ry = rz = 0.0
    if face.pose is not None:
        rx, ry, rz = openface_rotation(face.pose.yaw, face.pose.pitch, face.pose.roll)
    t = face.position_mm or (0.0, 0.0, 0.0)
    row.update({c: _round(v, c) for c, v in zip(POSE, (*t, rx, ry, rz))})
    lms = face.landmarks
    if lms is not None and len(lms) >= 468:
        pts = np.asarray(lms, dtype=np.float64)
        p68 = pts[IBUG68_INDEX]
        for i in range(IBUG_POINTS):
            row[f"x_{i}"] = round(float(p68[i, 0]), 1)
            row[f"y_{i}"] = round(float(p68[i, 1]), 1)
        xyz = (landmarks_mm(p68, face.position_mm, (frame.width, frame.height))
               if face.position_mm is not None and frame.height > 0
               else np.zeros((IBUG_POINTS, 3)))
        for i in range(IBUG_POINTS):
            row[f"X_{i}"], row[f"Y_{i}"], row[f"Z_{i}"] = (round(float(v), 1) for v in xyz[i])
        if landmarks:
            for axis, name in enumerate("xyz"):
                for i in range(pts.shape[0]):
                    row[f"mp_{name}_{i}"] = round(float(pts[i, axis]), 1)
    bs_reg, bs_cls = blendshape_aus(face.blendshapes)
    reg, cls = au_columns(au_names)
    for a in reg:
        v = face.au_intensity[a] if a in face.au_intensity else bs_reg.get(a)
        row[f"{a}_r"] = None if v is None else round(float(v), 2)
    for a in cls:
        if a in face.au_occurrence:
            row[f"{a}_c"] = 1.0 if face.au_occurrence[a] >= occurrence_threshold else 0.0
        else:
            row[f"{a}_c"] = bs_cls.get(a)
    for e in emotion_names:
        row[f"emotion_{e}"] = round(float(face.emotions[e]), 4)
    row["top_emotion"] = face.top_emotion
    if blendshapes and face.blendshapes is not None:
        for b in BLENDSHAPE_NAMES:
            row[f"blendshape_{b}"] = round(float(face.blendshapes[b]), 4)
    return row


def cell(value: Any, column: str) -> str:
    """A cell as OpenFace writes it: fixed decimals per column, integers as integers, empty only
    for what is unknown (a blendshape AU without blendshapes, points of a message without
    landmarks)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    d = decimals(column)
    if d is None:
        return str(int(value)) if isinstance(value, (int, np.integer)) else str(value)
    return f"{float(value):.{d}f}"
