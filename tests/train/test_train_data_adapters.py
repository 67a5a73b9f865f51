"""Each adapter parses a tiny fixture tree in the dataset's official layout down to the labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train.data import load_records
from train.data.affectnet import map_expression
from train.data.sample import au_index

from train_helpers import write_image


def occ(rec, au: int) -> float:  # type: ignore[no-untyped-def]
    return float(rec.au_occurrence[au_index(au)])


def inten(rec, au: int) -> float:  # type: ignore[no-untyped-def]
    return float(rec.au_intensity[au_index(au)])


# ------------------------------------------------------------------------------------------ BP4D

def _bp4d_tree(root: Path, occ_dir: str, int_dir: str, frames: str) -> None:
    (root / occ_dir).mkdir(parents=True)
    # real BP4D files carry ~30 AU columns; we include a non-protocol AU (27) that must be ignored
    header = "0,1,2,4,6,7,10,12,14,15,17,23,24,27"
    rows = ["1,1,0,0,1,0,0,1,0,0,0,0,0,1",
            "2,0,1,9,0,1,1,0,1,1,1,1,1,0",
            "3,1,1,1,1,1,1,1,1,1,1,1,1,1"]
    (root / occ_dir / "F001_T1.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (root / int_dir / "AU06").mkdir(parents=True)
    (root / int_dir / "AU06" / "F001_T1_AU06.csv").write_text("1,3\n2,9\n3,0\n")
    (root / int_dir / "AU12").mkdir(parents=True)
    (root / int_dir / "AU12" / "F001_T1_AU12.csv").write_text("1,5\n2,0\n")
    for f in (1, 2):  # frame 3 has labels but no image -> skipped
        write_image(root / frames / "F001" / "T1" / f"{f:04d}.jpg", seed=f)


def test_bp4d_official_layout(tmp_path: Path) -> None:
    _bp4d_tree(tmp_path, "AUCoding", "AU-Intensity-Codes3.0", "2D+3D")
    recs = load_records("bp4d", tmp_path)
    assert [r.key for r in recs] == ["BP4D/F001/T1/00001", "BP4D/F001/T1/00002"]
    r1, r2 = recs
    assert r1.subject == "F001" and r1.source == "BP4D"
    assert r1.image_path.name == "0001.jpg"
    assert occ(r1, 1) == 1 and occ(r1, 2) == 0 and occ(r1, 6) == 1 and occ(r1, 12) == 1
    assert math.isnan(occ(r2, 4))  # 9 = not coded
    assert occ(r2, 24) == 1
    assert math.isnan(float(r1.au_occurrence[AU_NAMES.index("AU25")]))  # not a BP4D AU
    assert inten(r1, 6) == 3 and inten(r1, 12) == 5
    assert math.isnan(inten(r2, 6)) and inten(r2, 12) == 0
    assert math.isnan(inten(r1, 10))  # no intensity file for AU10
    assert len(load_records("bp4d", tmp_path, subjects=["F002"])) == 0


def test_bp4d_plus_layout(tmp_path: Path) -> None:
    _bp4d_tree(tmp_path, "AUCoding/AU_OCC", "AUCoding/AU_INT", "2D+3D")
    recs = load_records("bp4d+", tmp_path)
    assert len(recs) == 2 and recs[0].source == "BP4D+"
    assert inten(recs[0], 6) == 3 and occ(recs[0], 7) == 0


def test_bp4d_bad_code_names_file_and_value(tmp_path: Path) -> None:
    _bp4d_tree(tmp_path, "AUCoding", "AU-Intensity-Codes3.0", "2D+3D")
    (tmp_path / "AUCoding" / "F001_T1.csv").write_text("0,1\n1,7\n")
    with pytest.raises(ValueError, match=r"F001_T1.csv: AU1 frame 1: expected 0, 1 or 9, got 7"):
        load_records("bp4d", tmp_path)


def test_bp4d_missing_frames_folder_lists_candidates(tmp_path: Path) -> None:
    (tmp_path / "AUCoding").mkdir()
    with pytest.raises(FileNotFoundError, match="Sequences"):
        load_records("bp4d", tmp_path)


# ----------------------------------------------------------------------------------------- DISFA

def _tiny_video(path: Path, n: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(n):
            img = np.full((32, 32, 3), 40 * i, dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_disfa_layout_with_frame_extraction(tmp_path: Path) -> None:
    from train.data.disfa import extract_frames, video_path

    root = tmp_path / "DISFA"
    lab = root / "ActionUnit_Labels" / "SN001"
    lab.mkdir(parents=True)
    (lab / "SN001_au1.txt").write_text("1,0\n2,1\n3,2\n4,5\n")
    (lab / "SN001_au5.txt").write_text("1,3\n2,3\n3,3\n4,3\n")  # intensity-only AU
    (lab / "SN001_au26.txt").write_text("1,4\n2,0\n3,0\n4,0\n")
    vid = video_path(root, "SN001")
    assert vid.name == "LeftVideoSN001_comp.avi"
    _tiny_video(vid, 4)
    frames = tmp_path / "frames"
    assert extract_frames(vid, frames / "SN001") == 4
    assert sorted(p.name for p in (frames / "SN001").iterdir()) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    recs = load_records("disfa", root, frames_root=frames)
    assert [r.key for r in recs] == [f"DISFA/SN001/{i:05d}" for i in (1, 2, 3, 4)]
    # occurrence = intensity >= 2 for detection AUs
    assert [occ(r, 1) for r in recs] == [0, 0, 1, 1]
    assert [inten(r, 1) for r in recs] == [0, 1, 2, 5]
    assert [occ(r, 26) for r in recs] == [1, 0, 0, 0]
    # AU5 is an intensity AU of DISFA but not a detection AU
    assert inten(recs[0], 5) == 3 and math.isnan(occ(recs[0], 5))
    assert all(r.image_path.is_file() for r in recs)


def test_disfa_without_frames_says_how_to_extract(tmp_path: Path) -> None:
    lab = tmp_path / "ActionUnit_Labels" / "SN002"
    lab.mkdir(parents=True)
    (lab / "SN002_au1.txt").write_text("1,0\n")
    with pytest.raises(FileNotFoundError, match="extract-frames"):
        load_records("disfa", tmp_path, frames_root=tmp_path / "frames")


# ------------------------------------------------------------------------------------- AffectNet

def test_affectnet_layout_and_mapping(tmp_path: Path) -> None:
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    lm = ";".join(f"{10 + i % 20}.5;{20 + i // 4}" for i in range(68))
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
    rows = [f"689/a.jpg,5,6,30,40,{lm},1,0.5,0.2",
            f"689/b.jpg,0,0,48,48,{lm},7,-0.1,0.3",   # contempt
            f"689/c.jpg,0,0,48,48,{lm},9,-2,-2",       # uncertain
            f"689/d.jpg,0,0,48,48,{lm},10,-2,-2",      # non-face
            f"12/e.png,0,0,48,48,{lm},6,-0.6,0.7"]     # anger
    (lists / "training.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    for name in ("689/a.jpg", "689/b.jpg", "689/c.jpg", "689/d.jpg", "12/e.png"):
        write_image(tmp_path / "Manually_Annotated_Images" / name)
    recs = load_records("affectnet", tmp_path, split="train")
    assert [r.key for r in recs] == ["AffectNet/689/a.jpg", "AffectNet/689/b.jpg", "AffectNet/12/e.png"]
    assert [EMOTION_NAMES[r.emotion] for r in recs] == ["happy", "contempt", "anger"]
    assert recs[0].box == (5.0, 6.0, 35.0, 46.0)
    assert recs[0].landmarks68 is not None and recs[0].landmarks68.shape == (68, 2)
    assert recs[0].landmarks68[1].tolist() == [11.5, 20.0]
    seven = load_records("affectnet", tmp_path, split="train", num_classes=7)
    assert [r.key for r in seven] == ["AffectNet/689/a.jpg", "AffectNet/12/e.png"]
    kept = load_records("affectnet", tmp_path, split="train", drop_unknown=False)
    assert [r.emotion for r in kept] == [1, 7, -1, 6]
    assert map_expression(0) == EMOTION_NAMES.index("neutral")
    with pytest.raises(FileNotFoundError, match="validation.csv"):
        load_records("affectnet", tmp_path, split="val")


# ---------------------------------------------------------------------------------------- RAF-DB

def test_rafdb_basic_layout(tmp_path: Path) -> None:
    base = tmp_path / "basic"
    (base / "EmoLabel").mkdir(parents=True)
    (base / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 5\ntrain_00002.jpg 4\ntest_0001.jpg 7\n")
    for stem in ("train_00001", "train_00002", "test_0001"):
        write_image(base / "Image" / "original" / f"{stem}.jpg")
        write_image(base / "Image" / "aligned" / f"{stem}_aligned.jpg")
    man = base / "Annotation" / "manual"
    man.mkdir(parents=True)
    # eyes given right-to-left and mouth corners right-to-left: the adapter sorts them by x
    (man / "train_00001_manu_attri.txt").write_text(
        "30.0\t20.0\n15.0\t21.0\n22.0\t30.0\n29.0\t38.0\n16.0\t39.0\n1\n0\n2\n")
    recs = load_records("rafdb", tmp_path, split="train")
    assert [(r.key, EMOTION_NAMES[r.emotion]) for r in recs] == [
        ("RAF-DB/train_00001", "sad"), ("RAF-DB/train_00002", "happy")]
    assert recs[0].image_path.parent.name == "original"
    assert recs[0].points5 is not None
    assert recs[0].points5.tolist() == [[15, 21], [30, 20], [22, 30], [16, 39], [29, 38]]
    assert recs[1].image_path.name == "train_00002_aligned.jpg" and recs[1].points5 is None
    test = load_records("rafdb", base, split="test")
    assert [EMOTION_NAMES[r.emotion] for r in test] == ["neutral"]


# ---------------------------------------------------------------------------------------- folder

def test_folder_adapter(tmp_path: Path) -> None:
    write_image(tmp_path / "img" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    (tmp_path / "labels.csv").write_text(
        "path,subject,emotion,AU12,AU12_intensity,AU04\n"
        "img/a.png,s1,happiness,1,3.5,\n"
        "img/b.png,,2,0,,1\n")
    recs = load_records("folder", tmp_path)
    assert recs[0].subject == "s1" and recs[0].emotion == EMOTION_NAMES.index("happy")
    assert occ(recs[0], 12) == 1 and inten(recs[0], 12) == 3.5 and math.isnan(occ(recs[0], 4))
    assert recs[1].subject == "folder/img/b.png" and recs[1].emotion == 2 and occ(recs[1], 4) == 1
    (tmp_path / "labels.csv").write_text("path,AU1_int\nimg/a.png,1\n")
    with pytest.raises(ValueError, match=r"unknown columns \['AU1_int'\]"):
        load_records("folder", tmp_path)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'ck'"):
        load_records("ck", ".")


def test_au_vector_layout() -> None:
    assert au_index(1) == 0 and au_index("AU43") == len(AU_NAMES) - 1
    with pytest.raises(ValueError, match="AU03 is not one of"):
        au_index(3)
