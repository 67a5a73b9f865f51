"""Psychomorph/WebMorph ``.tem`` templates and the FRL 189-point -> iBUG-68 correspondence.

The FRL template (Face Research Lab, 189 points) is what the DeBruine & Jones photo sets ship.
Its point semantics (from the published template definition): 0/1 pupils; 18-22 and 28-30 the
image-left eye (outer corner 18, upper lid 19-21, inner corner 22, lower lid 28-30); 23-27 and
31-33 the image-right eye; 50-60 the two sides of the nose bridge down to the alar bulbs; 55
subnasale; 61-70 and 179-182 nostrils; 71-86 brows (upper edge 71-76 / 77-82, lower edge 83-84
/ 85-86); 87-108 lips (corners 87/93, upper lip top 88-92, upper lip bottom 94-98, lower lip top
99-103, lower lip bottom 104-108); 109-133 and 185-188 ear junctions and jaw (chin bottom 129).
"Left" in the FRL names is image-left, which is also where iBUG-68 starts, so no mirroring.

The photos are labelled with FRL points while the ICT mesh knows the iBUG-68 vertices, so the
fitter needs FRL expressed as iBUG points. Points that exist in both are mapped directly; points
that iBUG places along a contour (jaw, brows, eyelids, nose ridge) are resampled along the FRL
polyline at the arc-length fractions the same iBUG points have on the frontal ICT mesh.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRL_POINTS = 189


def read_tem(path: str | os.PathLike[str]) -> np.ndarray:
    """Read the points of a ``.tem`` file as (N, 2) float32 image pixels; line data is ignored."""
    p = Path(path)
    lines = p.read_text().split("\n")
    try:
        n = int(lines[0].strip())
    except (ValueError, IndexError) as e:
        raise ValueError(f"{p}: first line must be the point count, got {lines[:1]!r}") from e
    pts = []
    for i in range(1, n + 1):
        parts = lines[i].split()
        if len(parts) < 2:
            raise ValueError(f"{p}: line {i + 1} must hold 'x y', got {lines[i]!r}")
        pts.append((float(parts[0]), float(parts[1])))
    return np.asarray(pts, np.float32)


@dataclass(frozen=True)
class Contour:
    """iBUG indices sampled along an FRL polyline; ``first``/``last`` pin the ends to it."""

    ibug: tuple[int, ...]
    frl: tuple[int, ...]


# Direct one-to-one correspondences (iBUG index -> FRL index, or mean of several FRL points).
DIRECT: dict[int, tuple[int, ...]] = {
    8: (129,),  # chin bottom
    30: (54, 60),  # nose tip: between the two alar-bulb bridge points
    31: (64, 65), 32: (179, 180), 33: (55,), 34: (181, 182), 35: (69, 70),
    36: (18,), 39: (22,), 42: (23,), 45: (27,),  # eye corners
    48: (87,), 49: (88,), 50: (89,), 51: (90,), 52: (91,), 53: (92,), 54: (93,),
    55: (108,), 56: (107,), 57: (106,), 58: (105,), 59: (104,),
    61: (95,), 62: (96,), 63: (97,), 65: (102,), 66: (101,), 67: (100,),
}

# Contours: the iBUG points (in order) are spread along the FRL polyline by arc length.
CONTOURS: tuple[Contour, ...] = (
    Contour(ibug=(0, 1, 2, 3, 4, 5, 6, 7, 8), frl=(185, 110, 186, 111, 125, 126, 127, 128, 129)),
    Contour(ibug=(8, 9, 10, 11, 12, 13, 14, 15, 16),
            frl=(129, 130, 131, 132, 133, 114, 188, 113, 187)),
    Contour(ibug=(17, 18, 19, 20, 21), frl=(71, 72, 73, 74, 75, 76)),
    Contour(ibug=(22, 23, 24, 25, 26), frl=(77, 78, 79, 80, 81, 82)),
    Contour(ibug=(27, 28, 29, 30), frl=(-51, -52, -53, -54)),  # negative: midline pairs
    Contour(ibug=(36, 37, 38, 39), frl=(18, 19, 20, 21, 22)),
    Contour(ibug=(39, 40, 41, 36), frl=(22, 30, 29, 28, 18)),
    Contour(ibug=(42, 43, 44, 45), frl=(23, 24, 25, 26, 27)),
    Contour(ibug=(45, 46, 47, 42), frl=(27, 33, 32, 31, 23)),
)

# Relative trust per iBUG point in the fit: the jaw is a silhouette (view dependent) and the
# brow line is drawn differently in the two conventions, so both count less than eyes and lips.
_WEIGHTS = np.ones(68, np.float32)
_WEIGHTS[0:17] = 0.35
_WEIGHTS[8] = 0.8
_WEIGHTS[17:27] = 0.5
_WEIGHTS[27:30] = 0.6


def _frl_point(frl: np.ndarray, idx: int) -> np.ndarray:
    if idx < 0:  # nose-ridge midline between the left (50..54) and right (56..60) bridge points
        k = -idx - 50
        return (frl[50 + k] + frl[56 + k]) / 2
    return frl[idx]


def _arc_fractions(pts: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    return cum / max(float(cum[-1]), 1e-9)


def _resample(poly: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    t = _arc_fractions(poly)
    return np.stack([np.interp(fractions, t, poly[:, k]) for k in range(2)], axis=1)


def frl_to_ibug68(frl: np.ndarray, ibug_reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FRL 189 points -> (68, 2) iBUG points and (68,) fit weights (0 where undefined).

    ``ibug_reference`` is a frontal 2-D projection of the ICT iBUG-68 vertices; it supplies the
    arc-length fractions at which contour points sit.
    """
    if frl.shape != (FRL_POINTS, 2):
        raise ValueError(f"FRL template must be ({FRL_POINTS}, 2), got {frl.shape}")
    if ibug_reference.shape != (68, 2):
        raise ValueError(f"iBUG reference must be (68, 2), got {ibug_reference.shape}")
    out = np.zeros((68, 2), np.float32)
    defined = np.zeros(68, bool)
    for c in CONTOURS:
        poly = np.stack([_frl_point(frl, i) for i in c.frl])
        fr = _arc_fractions(ibug_reference[list(c.ibug)])
        out[list(c.ibug)] = _resample(poly, fr)
        defined[list(c.ibug)] = True
    for i, src in DIRECT.items():
        out[i] = frl[list(src)].mean(axis=0)
        defined[i] = True
    weights = np.where(defined, _WEIGHTS, 0.0).astype(np.float32)
    return out, weights
