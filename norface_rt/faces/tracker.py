"""Stable per-stream face identities from frame-by-frame detections.

Greedy matching (scipy's Hungarian solver is not a dependency, and with a handful of faces greedy on
a good cost is as accurate): every (track, detection) pair passing the gate gets the cost
``(1 - IoU) + centre distance / mean face size``, computed against the track's box *predicted* with
its constant-velocity estimate; pairs are taken cheapest first. The prediction is what keeps ids
right when two faces cross, or when one is hidden behind the other for a few frames.
Gate: IoU >= iou_threshold, or centre distance <= max_center_distance face sizes (fast motion).
Ties break on (track id, detection index), so the result is a pure function of the input sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from norface_rt.types import Face


def box_iou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 for empty boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def _centre(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) * 0.5, (b[1] + b[3]) * 0.5])


def _size(b: np.ndarray) -> float:
    return float(np.sqrt(max(b[2] - b[0], 1e-6) * max(b[3] - b[1], 1e-6)))


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # last observed box
    velocity: np.ndarray  # centre displacement per frame (pixels)
    misses: int = 0  # consecutive frames without a detection

    def predicted(self) -> np.ndarray:
        shift = self.velocity * (self.misses + 1)
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]])


class Tracker:
    """Assigns ``track_id`` to faces; one instance per stream, ids start at 0 and only increase."""

    def __init__(self, max_misses: int = 5, iou_threshold: float = 0.3,
                 max_center_distance: float = 0.5, velocity_smoothing: float = 0.5) -> None:
        if not isinstance(max_misses, int) or max_misses < 0:
            raise ValueError(f"max_misses must be an int >= 0, got {max_misses!r}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_center_distance < 0.0:
            raise ValueError(f"max_center_distance must be >= 0, got {max_center_distance}")
        if not 0.0 <= velocity_smoothing < 1.0:
            raise ValueError(f"velocity_smoothing must be in [0, 1), got {velocity_smoothing}")
        self.max_misses = max_misses
        self.iou_threshold = float(iou_threshold)
        self.max_center_distance = float(max_center_distance)
        self.velocity_smoothing = float(velocity_smoothing)
        self._tracks: list[_Track] = []
        self._next_id = 0

    @property
    def active_ids(self) -> list[int]:
        """Ids of tracks still alive (seen within the last ``max_misses`` frames)."""
        return [t.track_id for t in self._tracks]

    def reset(self) -> None:
        """Forget all tracks (e.g. after a stream restart); ids keep increasing, never reused."""
        self._tracks = []

    def update(self, faces: Sequence[Face]) -> list[Face]:
        """Faces of one frame -> the same faces (same order, copies) with ``track_id`` set."""
        boxes = [np.asarray(f.box, dtype=np.float64) for f in faces]
        for i, b in enumerate(boxes):
            if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] < b[0] or b[3] < b[1]:
                raise ValueError(f"faces[{i}].box must be finite (x0, y0, x1, y1) with x1>=x0, "
                                 f"y1>=y0, got {faces[i].box}")
        pairs: list[tuple[float, int, int, int]] = []  # cost, track_id, track index, det index
        for ti, t in enumerate(self._tracks):
            pred = t.predicted()
            pc, ps = _centre(pred), _size(pred)
            for di, b in enumerate(boxes):
                iou = box_iou(pred, b)
                dist = float(np.linalg.norm(_centre(b) - pc)) / (0.5 * (ps + _size(b)))
                if iou >= self.iou_threshold or dist <= self.max_center_distance:
                    pairs.append(((1.0 - iou) + dist, t.track_id, ti, di))
        pairs.sort()
        assigned: dict[int, int] = {}  # det index -> track index
        used_tracks: set[int] = set()
        for _, _, ti, di in pairs:
            if ti in used_tracks or di in assigned:
                continue
            assigned[di] = ti
            used_tracks.add(ti)

        ids = [-1] * len(faces)
        a = self.velocity_smoothing
        for di, ti in assigned.items():
            t = self._tracks[ti]
            step = (_centre(boxes[di]) - _centre(t.box)) / (t.misses + 1)
            t.velocity = a * t.velocity + (1.0 - a) * step
            t.box = boxes[di]
            t.misses = 0
            ids[di] = t.track_id
        survivors: list[_Track] = []
        for ti, t in enumerate(self._tracks):
            if ti not in used_tracks:
                t.misses += 1
                if t.misses > self.max_misses:
                    continue
            survivors.append(t)
        # New tracks get ids left to right (then top to bottom) so numbering does not depend on
        # the detector's output order.
        new = sorted((di for di in range(len(faces)) if di not in assigned),
                     key=lambda di: (boxes[di][0], boxes[di][1], di))
        for di in new:
            survivors.append(_Track(self._next_id, boxes[di], np.zeros(2)))
            ids[di] = self._next_id
            self._next_id += 1
        self._tracks = survivors
        return [dataclasses.replace(f, track_id=tid) for f, tid in zip(faces, ids)]
