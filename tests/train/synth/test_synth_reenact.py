"""Re-enacted real photos (real GL, a real permissive photo, real MediaPipe): the face moves with
the expression, nothing outside the head changes, the mouth interior appears where the jaw drops,
and the generator writes shard samples with labels and geometry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train.synth.reenact import (
    HELD_OUT_IDS,
    PhotoReenactor,
    ReenactGenerator,
    face_weights,
    load_fitted_photo,
    photo_list,
)


@pytest.fixture(scope="module")
def fitted(shared_dir: Path, face_model, gl_available):  # noqa: ANN001, ANN201
    pid, jpg, tem = next(p for p in photo_list(shared_dir) if p[0] == "london/016")
    return load_fitted_photo(face_model, pid, jpg, tem, max_side=360)


def test_held_out_people_are_never_reenacted(shared_dir: Path) -> None:
    ids = {p[0] for p in photo_list(shared_dir, HELD_OUT_IDS)}
    assert ids and not ids & set(HELD_OUT_IDS)
    assert not any(i.startswith("london/") and int(i.split("/")[1]) % 3 == 0 for i in ids)


def test_motion_share_is_one_on_the_face_and_zero_down_the_neck(face_model) -> None:  # noqa: ANN001
    w = face_weights(face_model)
    lm = face_model.landmarks68
    assert np.all(w[lm] == 1.0)  # every landmark moves fully
    neck = face_model.part("head_neck")
    low = face_model.neutral[neck, 1] < face_model.neutral[lm[8], 1] - 6.0  # 6 cm below the chin
    assert low.any() and np.all(w[neck][low] == 0.0)


def test_a_dropped_jaw_opens_the_mouth_and_leaves_the_background(fitted, face_model) -> None:  # noqa: ANN001
    r = PhotoReenactor(face_model)
    try:
        names = face_model.expression_names
        zero = np.zeros(len(names), np.float32)
        same = r.reenact(fitted, zero)
        # no expression: the photo comes back (resampling at the same place, shading ratio 1)
        assert np.abs(same.astype(int) - fitted.image.astype(int)).mean() < 1.0
        jaw = zero.copy()
        jaw[names.index("jawOpen")] = 1.0
        out = r.reenact(fitted, jaw)
        assert out.shape == fitted.image.shape and out.dtype == np.uint8
        fmap, _ = r.maps(fitted.fit, jaw, (0.0, 0.3, 1.0))
        mat = np.rint(fmap[..., 3]).astype(int) - 1
        assert (mat < 0).any()
        # (the soft edges blur one pixel across the outline)
        outside = cv2.erode((mat < 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        np.testing.assert_array_equal(out[outside], fitted.image[outside])
        interior = np.isin(mat, (1, 2, 3))
        assert interior.sum() > 50  # an open mouth shows its inside
        # the open mouth is darker than the closed lips that were there
        assert out[interior].mean() < fitted.image[interior].mean() - 20
    finally:
        r.release()


def test_generator_writes_labelled_samples_with_geometry(shared_dir: Path, landmarker_path: Path,
                                                         gl_available) -> None:  # noqa: ANN001
    gen = ReenactGenerator(shared_dir, landmarker_path, img_size=64)
    try:
        gen.photos = [p for p in gen.photos if p[0] in ("london/016", "canada/008f")]
        a = gen.sample(3, 0)
        b = gen.sample(3, 0)
        np.testing.assert_array_equal(a["image"], b["image"])  # deterministic per (seed, index)
        assert a["image"].shape == (64, 64, 3)
        assert a["source"] == "reenact" and a["subject"] in ("london/016", "canada/008f")
        assert a["mp_blendshapes"].shape == (51,) and not np.isnan(a["mp_blendshapes"]).any()
        assert a["au_occurrence"].shape == (18,) and "mp_neutral" not in a
        assert -1 <= int(a["emotion"]) < 8
    finally:
        gen.close()
