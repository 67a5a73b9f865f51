"""FRL templates, the FRL -> iBUG correspondence, and the model fit (real photos, real ICT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.synth.fit import fit_landmarks, frontal_ibug_reference
from train.synth.render import Camera, rotation_matrix
from train.synth.tem import DIRECT, frl_to_ibug68, read_tem


def test_read_tem_real_file(shared_dir: Path) -> None:
    tem = shared_dir / "faces" / "canada" / "003f.tem"
    if not tem.is_file():
        pytest.skip(f"template not found: {tem}")
    pts = read_tem(tem)
    assert pts.shape == (189, 2)
    assert pts[0, 0] < pts[1, 0]  # point 0 is the image-left pupil


def test_read_tem_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tem"
    bad.write_text("many\n1 2\n")
    with pytest.raises(ValueError, match="point count"):
        read_tem(bad)
    short = tmp_path / "short.tem"
    short.write_text("3\n1\t2\n3\n")
    with pytest.raises(ValueError, match="line 3"):
        read_tem(short)


def test_frl_to_ibug_direct_points_and_contours(face_model) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    frl = rng.uniform(0, 1000, (189, 2)).astype(np.float32)
    ref = frontal_ibug_reference(face_model)
    pts, w = frl_to_ibug68(frl, ref)
    assert pts.shape == (68, 2) and (w > 0).sum() >= 60
    for i, src in DIRECT.items():
        np.testing.assert_allclose(pts[i], frl[list(src)].mean(axis=0), rtol=1e-6)
    # contour end points are pinned to the FRL polyline ends (outer eye corner 18 -> iBUG 36)
    np.testing.assert_allclose(pts[36], frl[18], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(189, 2\)"):
        frl_to_ibug68(frl[:100], ref)


def test_fit_recovers_a_synthetic_face(face_model) -> None:  # noqa: ANN001
    """Project a known identity/pose, fit it back: landmarks must land within ~1% of the IOD."""
    m = face_model
    rng = np.random.default_rng(1)
    alpha = rng.normal(0, 1, 40).astype(np.float32)
    shape = m.identity_shape(alpha)
    rot = rotation_matrix(8, -5, 3)
    cam = Camera(focal=2400, width=900, height=1200)
    posed = shape @ rot.T + np.array([0.5, -1.0, -90.0], np.float32)
    target = cam.project(posed[m.landmarks68])
    fit = fit_landmarks(m, target, np.ones(68, np.float32), 900, 1200)
    assert fit.rms_px / fit.iod_px < 0.01


def test_fit_on_real_photo(shared_dir: Path, face_model) -> None:  # noqa: ANN001
    tem = shared_dir / "faces" / "composite" / "f_multi.tem"
    if not tem.is_file():
        pytest.skip(f"template not found: {tem}")
    frl = read_tem(tem)
    target, w = frl_to_ibug68(frl, frontal_ibug_reference(face_model))
    fit = fit_landmarks(face_model, target, w, 1350, 1350)
    assert fit.rms_px / fit.iod_px < 0.06
    assert abs(fit.rotvec[1]) < 0.2  # a frontal photo fits a near-frontal pose


def test_fit_rejects_bad_input(face_model) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        fit_landmarks(face_model, np.zeros((5, 2)), np.ones(5), 100, 100)
    with pytest.raises(ValueError, match="eye corners"):
        fit_landmarks(face_model, np.zeros((68, 2)), np.ones(68), 100, 100)
