"""Five-point alignment: similarity estimation, point extraction, warping real faces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from faces_helpers import as_packet, load_rgb
from norface_rt.config import ModelConfig
from norface_rt.faces.align import (
    Aligner,
    estimate_similarity,
    points5_from_ibug68,
    points5_from_mediapipe,
    transform_points,
)


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx],
                     [scale * math.sin(a), scale * math.cos(a), ty]])


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (0.37, 12.0, -40.0, 7.5),
                                               (2.5, -170.0, 300.0, -20.0)])
def test_similarity_recovers_a_known_transform_exactly(scale, angle, tx, ty) -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, size=(5, 2))
    m_true = similarity(scale, angle, tx, ty)
    m = estimate_similarity(src, transform_points(m_true, src))
    np.testing.assert_allclose(m, m_true, atol=1e-9)


def test_similarity_is_least_squares_and_never_reflects() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(5, 2))
    m_true = similarity(1.3, 25.0, 10.0, -5.0)
    dst = transform_points(m_true, src) + rng.normal(0, 0.5, size=(5, 2))
    m = estimate_similarity(src, dst)
    err = np.sum((transform_points(m, src) - dst) ** 2)
    # Any perturbation of the four similarity parameters (a, b, tx, ty) increases the error.
    a, b, tx, ty = m[0, 0], m[1, 0], m[0, 2], m[1, 2]
    for sign in (1e-3, -1e-3):
        for k in range(4):
            q = np.array([a, b, tx, ty])
            q[k] += sign
            mq = np.array([[q[0], -q[1], q[2]], [q[1], q[0], q[3]]])
            assert np.sum((transform_points(mq, src) - dst) ** 2) > err
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])
    assert np.linalg.det(m[:, :2]) > 0
    mirrored = src * [-1, 1]  # a mirror-image target: best *similarity* still has det > 0
    assert np.linalg.det(estimate_similarity(src, mirrored)[:, :2]) > 0
    assert np.array_equal(estimate_similarity(src, dst), m)  # deterministic, bit for bit


def test_similarity_rejects_bad_input_naming_the_problem() -> None:
    with pytest.raises(ValueError, match=r"src must have shape \(N>=2, 2\), got \(5, 3\)"):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"dst must have the same shape as src \(5, 2\), got \(4, 2\)"):
        estimate_similarity(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        estimate_similarity(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        estimate_similarity(np.full((5, 2), np.nan), np.zeros((5, 2)))


def test_points5_from_mediapipe_uses_eye_contours_not_irises() -> None:
    from norface_rt.faces.align import MP_LEFT_EYE_CONTOUR, MP_RIGHT_EYE_CONTOUR

    lm = np.zeros((478, 3))
    lm[list(MP_RIGHT_EYE_CONTOUR), :2] = (10, 20)
    lm[list(MP_LEFT_EYE_CONTOUR), :2] = (30, 21)
    lm[468, :2] = (99, 99)  # irises follow gaze; they must not move the alignment points
    lm[473, :2] = (99, 99)
    lm[4, :2] = (20, 30)
    lm[61, :2] = (12, 40)
    lm[291, :2] = (28, 41)
    p = points5_from_mediapipe(lm)
    np.testing.assert_allclose(p, [[10, 20], [30, 21], [20, 30], [12, 40], [28, 41]])
    assert p.shape == (5, 2) and p.dtype == np.float32
    lm468 = lm[:468].copy()
    lm468[list(MP_RIGHT_EYE_CONTOUR), :2] = 0
    lm468[[33, 133], :2] = [(5, 20), (15, 20)]  # right-eye contour corners; rest of contour at 0
    p = points5_from_mediapipe(lm468)
    assert p[0, 0] == pytest.approx(20 / 16) and p[2, 0] == 20
    with pytest.raises(ValueError, match=r"landmarks must have shape \(478 or 468, >=2\), got \(68, 2\)"):
        points5_from_mediapipe(np.zeros((68, 2)))


def test_points5_from_ibug68() -> None:
    l68 = np.zeros((68, 2))
    l68[36:42] = (10, 20)
    l68[42:48] = (30, 20)
    l68[30] = (20, 30)
    l68[48] = (12, 40)
    l68[54] = (28, 40)
    np.testing.assert_allclose(points5_from_ibug68(l68),
                               [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    with pytest.raises(ValueError, match=r"l68 must have shape \(68, >=2\), got \(5, 2\)"):
        points5_from_ibug68(np.zeros((5, 2)))


def test_aligner_empty_and_synthetic_template_hit() -> None:
    cfg = ModelConfig()
    al = Aligner(cfg)
    img = np.zeros((100, 120, 3), np.uint8)
    crops, mats = al.align(img, [])
    assert crops.shape == (0, cfg.img_size, cfg.img_size, 3) and crops.dtype == np.uint8
    assert mats.shape == (0, 2, 3)
    # Points that *are* a scaled, rotated template map exactly onto the template.
    pts = transform_points(similarity(0.5, 30.0, 20.0, 10.0), al.template_px)
    crops, mats = al.align(img, [pts, pts])
    assert crops.shape == (2, 112, 112, 3)
    np.testing.assert_allclose(transform_points(mats[0], pts), al.template_px, atol=1e-9)
    with pytest.raises(ValueError, match="image: expected an HxWx3 uint8 RGB array, got float32"):
        al.align(img.astype(np.float32), [pts])
    with pytest.raises(ValueError, match=r"points5 must have shape \(5, >=2\), got \(4, 2\)"):
        al.align(img, [pts[:4]])


def test_warp_moves_pixels_where_the_matrix_says() -> None:
    # A bright dot at each source point must appear at the template position in the crop.
    al = Aligner(ModelConfig())
    img = np.zeros((400, 400, 3), np.uint8)
    pts = transform_points(similarity(2.2, -20.0, 80.0, 60.0), al.template_px)
    for x, y in np.round(pts).astype(int):
        img[y - 3:y + 4, x - 3:x + 4] = 255
    crop, m = al.crop_for_points(img, pts)
    for sx, sy in np.round(pts):
        tx, ty = transform_points(m, [[sx, sy]])[0]
        assert crop[int(round(ty)), int(round(tx))].min() > 200
    assert crop[0, 0].max() == 0  # outside the dots stays black (constant border)


def test_real_neutral_face_lands_on_the_template(image_landmarker, media_dir: Path) -> None:
    img = load_rgb(media_dir / "grace_hopper_512x512.jpg")
    face = image_landmarker.detect(as_packet(img))[0]
    al = Aligner(ModelConfig())
    crop, m = al.crop_for_points(img, face.points5)
    again = image_landmarker.detect(as_packet(np.ascontiguousarray(crop)))
    assert len(again) == 1, "the aligned crop must still be a detectable face"
    err = np.linalg.norm(again[0].points5 - al.template_px, axis=1)
    assert err.max() < 3.0, f"re-detected points off the template by {err.round(2)} px"


def test_real_smiling_face_crop_matches_its_matrix(image_landmarker, media_dir: Path) -> None:
    img = load_rgb(media_dir / "single_face.jpg")
    face = image_landmarker.detect(as_packet(img))[0]
    al = Aligner(ModelConfig())
    crop, m = al.crop_for_points(img, face.points5)
    again = image_landmarker.detect(as_packet(np.ascontiguousarray(crop)))[0]
    # Re-detected in the crop == transformed by the matrix: the warp and the matrix agree.
    err = np.linalg.norm(again.points5 - transform_points(m, face.points5), axis=1)
    assert err.max() < 2.0, err
    # Eyes sit on the template; a smile legitimately moves the mouth corners off a neutral one.
    eye_err = np.linalg.norm(again.points5[:2] - al.template_px[:2], axis=1)
    assert eye_err.max() < 3.0, eye_err
