"""Per-face quality: when a face's numbers deserve less trust, and why.

The face stage keeps every face it finds (a consumer decides what to drop); this module only
flags the ones whose AU and emotion estimates are known to degrade, so overlays can mark them and
consumers can filter on ``quality.ok`` without re-deriving thresholds:

* ``small_face``: inter-ocular distance below :data:`SMALL_FACE_IOD` pixels. The aligned crop is
  then upsampled from fewer pixels than the model's input, and fine AUs (brows, lids) blur away.
* ``extreme_pose``: ``|yaw|`` above :data:`MAX_YAW` or ``|pitch|`` above :data:`MAX_PITCH`
  degrees. The five-point alignment of a turned head distorts the crop, and half of the face
  is foreshortened or hidden.
* ``low_confidence``: detection confidence below :data:`MIN_CONFIDENCE` (the BlazeFace score of
  the face box; real faces score 0.85-0.95, non-faces 0.05-0.3, see
  :mod:`norface_rt.faces.landmarker`).

A face without a pose (degenerate transform) is not flagged for pose.
"""

from __future__ import annotations

import numpy as np

from norface_rt.types import Face, FaceQuality

SMALL_FACE_IOD = 24.0  # pixels between the eye centres
MAX_YAW = 40.0  # degrees
MAX_PITCH = 30.0  # degrees
MIN_CONFIDENCE = 0.5
QUALITY_ISSUES: tuple[str, ...] = ("small_face", "extreme_pose", "low_confidence")


def interocular(points5: np.ndarray) -> float:
    """Distance in pixels between the two eye points of a ``points5`` array."""
    p = np.asarray(points5, dtype=np.float64)
    return float(np.linalg.norm(p[1] - p[0]))


def assess(face: Face) -> FaceQuality:
    """The quality flags of one detected face (see the module doc for each threshold)."""
    issues = []
    if interocular(face.points5) < SMALL_FACE_IOD:
        issues.append("small_face")
    if face.pose is not None and (abs(face.pose.yaw) > MAX_YAW or abs(face.pose.pitch) > MAX_PITCH):
        issues.append("extreme_pose")
    if face.confidence < MIN_CONFIDENCE:
        issues.append("low_confidence")
    return FaceQuality(tuple(issues))
