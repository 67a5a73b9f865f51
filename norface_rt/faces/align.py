"""Five-point face alignment shared by serving and training (no MediaPipe import on purpose).

Coordinates follow OpenCV's pixel-centre convention: pixel (col, row) is centred on (col, row) and
covers [col-0.5, col+0.5]. Template fractions ``f`` (ModelConfig.template) are positions in the
continuous crop ``[0, S]``, so in pixel-centre coordinates they are ``f * S - 0.5``; MediaPipe's
normalised landmarks are converted the same way (``x * W - 0.5``, see landmarker.py). Both training
data (68-point annotations) and live faces therefore land on the same template.

The five points, in ModelConfig.template order (image-left first for a frontal face; they are
semantic, so a mirrored face keeps the subject's right eye first):
  0 subject's right eye centre, 1 subject's left eye centre, 2 nose tip,
  3 subject's right mouth corner, 4 subject's left mouth corner.

Warping is bilinear with a constant black border (ArcFace/InsightFace practice): pixels outside the
frame become 0 rather than smeared edge colours, so a face at the frame border looks the same in
training (synthetic crops) and serving.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.images import check_rgb_image

# MediaPipe face mesh indices (subject's right eye = image-left for a frontal face).
MP_RIGHT_EYE_CONTOUR = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
MP_LEFT_EYE_CONTOUR = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
# Nose tip: vertex 4, the MediaPipe vertex used for iBUG-68 point 30 in the common mesh->68 mapping
# (e.g. LatentSync's LM68_FROM_MP478), so MediaPipe and 68-point data give the same point. Vertex 1
# (pronasale in 3-D) projects 3-6 px (at 112) below it on frontal faces.
MP_NOSE_TIP = 4
MP_RIGHT_MOUTH_CORNER = 61
MP_LEFT_MOUTH_CORNER = 291

# iBUG 300-W 68-point indices (0-based).
IBUG_RIGHT_EYE = tuple(range(36, 42))
IBUG_LEFT_EYE = tuple(range(42, 48))
IBUG_NOSE_TIP = 30
IBUG_RIGHT_MOUTH_CORNER = 48
IBUG_LEFT_MOUTH_CORNER = 54


def _as_points(a: np.ndarray, name: str, rows: Sequence[int], min_cols: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] not in rows or arr.shape[1] < min_cols:
        raise ValueError(
            f"{name} must have shape ({' or '.join(map(str, rows))}, >={min_cols}), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr[:, :2])):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return arr[:, :2]


def points5_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """Five alignment points from a MediaPipe face mesh ((478, >=2) or (468, >=2), pixels).

    Eye centres are the mean of the eye contour, not the iris centres: irises move with gaze, which
    would shift the crop whenever the subject looks sideways, and 68-point training data (mean of
    the six eye points) then lands on the same template as live MediaPipe faces.
    """
    pts = _as_points(landmarks, "landmarks", (478, 468), 2)
    right_eye = pts[list(MP_RIGHT_EYE_CONTOUR)].mean(axis=0)
    left_eye = pts[list(MP_LEFT_EYE_CONTOUR)].mean(axis=0)
    out = np.stack([right_eye, left_eye, pts[MP_NOSE_TIP], pts[MP_RIGHT_MOUTH_CORNER],
                    pts[MP_LEFT_MOUTH_CORNER]])
    return out.astype(np.float32)


def points5_from_ibug68(l68: np.ndarray) -> np.ndarray:
    """Five alignment points from iBUG 68-point landmarks ((68, >=2), pixel-centre coordinates)."""
    pts = _as_points(l68, "l68", (68,), 2)
    out = np.stack([
        pts[list(IBUG_RIGHT_EYE)].mean(axis=0),
        pts[list(IBUG_LEFT_EYE)].mean(axis=0),
        pts[IBUG_NOSE_TIP],
        pts[IBUG_RIGHT_MOUTH_CORNER],
        pts[IBUG_LEFT_MOUTH_CORNER],
    ])
    return out.astype(np.float32)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama (1991) closed form without reflection: deterministic (no RANSAC) and optimal in the
    least-squares sense, which is what makes crops reproducible between training and serving.
    Returns the 2x3 matrix ``M`` with ``dst ~= M @ [x, y, 1]``.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape[0] < 2:
        raise ValueError(f"src must have shape (N>=2, 2), got {s.shape}")
    if d.shape != s.shape:
        raise ValueError(f"dst must have the same shape as src {s.shape}, got {d.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(d))):
        raise ValueError("src and dst must be finite, got NaN or inf")
    n = s.shape[0]
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc ** 2).sum() / n)
    if var_s < 1e-12:
        raise ValueError(f"src points are degenerate (all coincide), variance {var_s:.3g}")
    cov = dc.T @ sc / n
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    p = np.asarray(pts, dtype=np.float64)
    return p @ np.asarray(m, dtype=np.float64)[:, :2].T + np.asarray(m, dtype=np.float64)[:, 2]


class Aligner:
    """Warps faces onto ``cfg.template`` at ``cfg.img_size`` so every model input is framed alike."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.size = int(cfg.img_size)
        self.template_px = np.asarray(cfg.template, dtype=np.float64) * self.size - 0.5

    def matrix_for_points(self, points5: np.ndarray) -> np.ndarray:
        """2x3 matrix from image pixels to crop pixels for one face."""
        pts = _as_points(points5, "points5", (5,), 2)
        return estimate_similarity(pts, self.template_px)

    def crop_for_points(self, image: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned (S, S, 3) uint8 crop of one face and its 2x3 image-to-crop matrix."""
        check_rgb_image(image)
        m = self.matrix_for_points(points5)
        crop = cv2.warpAffine(image, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return crop, m

    def align(self, image: np.ndarray, points5_list: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Crops (N, S, S, 3) uint8 and matrices (N, 2, 3) float64; N=0 gives empty arrays."""
        check_rgb_image(image)
        n = len(points5_list)
        crops = np.zeros((n, self.size, self.size, 3), dtype=np.uint8)
        mats = np.zeros((n, 2, 3), dtype=np.float64)
        for i, p in enumerate(points5_list):
            crops[i], mats[i] = self.crop_for_points(image, p)
        return crops, mats
