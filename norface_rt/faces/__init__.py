"""Faces: MediaPipe landmarks, tracking, five-point alignment and head pose.

``align``, ``pose``, ``tracker`` and ``stage`` have no MediaPipe dependency (training imports them
directly; the stage takes any :class:`~norface_rt.faces.stage.FaceFinder`); ``landmarker`` needs
MediaPipe. Both are imported lazily through this package.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from norface_rt.faces.align import (
    Aligner,
    estimate_similarity,
    points5_from_ibug68,
    points5_from_mediapipe,
    transform_points,
)
from norface_rt.faces.pose import head_pose_from_matrix, rotation_from_angles
from norface_rt.faces.tracker import Tracker, box_iou

__all__ = [
    "Aligner", "FaceStage", "Landmarker", "TimestampGuard", "Tracker", "box_iou",
    "estimate_similarity", "faces_from_mediapipe", "head_pose_from_matrix", "points5_from_ibug68",
    "points5_from_mediapipe", "rotation_from_angles", "transform_points",
]

_LAZY = MappingProxyType({
    "Landmarker": "norface_rt.faces.landmarker",
    "TimestampGuard": "norface_rt.faces.landmarker",
    "faces_from_mediapipe": "norface_rt.faces.landmarker",
    "FaceStage": "norface_rt.faces.stage",
})


def __getattr__(name: str) -> Any:
    # Keeps `import norface_rt.faces.align` (training) free of MediaPipe's import cost.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt.faces' has no attribute {name!r}")
