"""JSONL and CSV sinks on real messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from norface_rt import protocol
from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.sinks.files import BASE_COLUMNS, CsvSink, JsonlSink
from norface_rt.stats import StageStats
from norface_rt.types import EndOfStream

EXPECTED_COLUMNS = [*BASE_COLUMNS, *(f"{a}_c" for a in AU_NAMES), *(f"{a}_p" for a in AU_NAMES),
                    *(f"{a}_r" for a in AU_NAMES), *(f"emotion_{e}" for e in EMOTION_NAMES),
                    "top_emotion", "untrained"]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_csv_two_face_frame(tmp_path: Path, frame_msg) -> None:
    msg = frame_msg(seq=5, n_faces=2, pts=0.2)
    msg["faces"][1]["pose"] = None
    sink = CsvSink(tmp_path / "out.csv")
    sink.write(msg)
    sink.close()
    cols, rows = read_csv(tmp_path / "out.csv")
    assert cols == EXPECTED_COLUMNS
    assert len(rows) == 2
    for row, face in zip(rows, msg["faces"]):
        assert row["stream_id"] == "cam0" and row["frame"] == "5"
        assert float(row["timestamp"]) == 0.2
        assert float(row["capture_time"]) == msg["capture_time"]  # lossless float text
        assert int(row["face_id"]) == face["track_id"]
        assert float(row["confidence"]) == face["confidence"]
        assert [float(row[k]) for k in ("x0", "y0", "x1", "y1")] == face["box"]
        for au in AU_NAMES:
            p = face["au_occurrence"][au]
            assert float(row[f"{au}_p"]) == p
            assert row[f"{au}_c"] == ("1" if p >= 0.5 else "0")
            assert float(row[f"{au}_r"]) == face["au_intensity"][au]
        for e in EMOTION_NAMES:
            assert float(row[f"emotion_{e}"]) == face["emotions"][e]
        assert row["top_emotion"] == face["top_emotion"]
        assert row["untrained"] == "1"
    assert float(rows[0]["yaw"]) == 10.0 and float(rows[0]["roll"]) == 2.5
    assert rows[1]["yaw"] == rows[1]["pitch"] == rows[1]["roll"] == ""  # pose unknown
    # Both 0 and 1 occur in the _c columns of this data, so the threshold really was applied.
    assert {rows[0][f"{a}_c"] for a in AU_NAMES} == {"0", "1"}


def test_csv_skips_faceless_frames_eos_and_stats(tmp_path: Path, frame_msg) -> None:
    st = StageStats()
    st.add("infer", 0.01)
    with CsvSink(tmp_path / "out.csv") as sink:
        sink.write(frame_msg(seq=0, n_faces=0))
        sink.write(frame_msg(seq=1, n_faces=1))
        sink.write(frame_msg(seq=2, n_faces=0, error="inference failed: boom"))
        sink.write(frame_msg(seq=3, n_faces=2))
        sink.write(protocol.eos_message(EndOfStream("cam0", 4, error="decoder died"), 4))
        sink.write(protocol.stats_message(st.snapshot()))
    _, rows = read_csv(tmp_path / "out.csv")
    assert [r["frame"] for r in rows] == ["1", "3", "3"]
    assert sink.rows == 3


def test_csv_without_any_face_still_has_header(tmp_path: Path, frame_msg) -> None:
    sink = CsvSink(tmp_path / "empty.csv")
    sink.write(frame_msg(n_faces=0))
    sink.close()
    sink.close()  # idempotent
    cols, rows = read_csv(tmp_path / "empty.csv")
    assert cols == EXPECTED_COLUMNS and rows == []


def test_csv_labels_from_constructor_and_key_mismatch(tmp_path: Path, frame_msg) -> None:
    aus, emos = ["AU12", "AU06"], list(EMOTION_NAMES)
    sink = CsvSink(tmp_path / "sub.csv", au_names=aus, emotion_names=emos,
                   occurrence_threshold=0.0)
    with pytest.raises(ValueError, match=r"au_occurrence: expected keys \['AU12', 'AU06'\]"):
        sink.write(frame_msg(n_faces=1))
    sink.close()
    cols, rows = read_csv(tmp_path / "sub.csv")
    assert cols[len(BASE_COLUMNS):len(BASE_COLUMNS) + 6] == ["AU12_c", "AU06_c", "AU12_p",
                                                             "AU06_p", "AU12_r", "AU06_r"]
    assert rows == []  # a refused frame writes no partial row
    with pytest.raises(ValueError, match="occurrence_threshold"):
        CsvSink(tmp_path / "x.csv", occurrence_threshold=1.5)


def test_csv_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        CsvSink(tmp_path / "nope" / "out.csv")


def test_jsonl_keeps_every_message_including_eos_error(tmp_path: Path, frame_msg) -> None:
    st = StageStats()
    st.add("infer", 0.01)
    st.frame_done("cam0", 2, 0)
    msgs = [frame_msg(seq=0), frame_msg(seq=1, n_faces=0),
            protocol.eos_message(EndOfStream("cam0", 2, dropped=0, error="rtsp: lost"), 2),
            protocol.stats_message(st.snapshot())]
    sink = JsonlSink(tmp_path / "out.jsonl")
    for m in msgs:
        sink.write(m)
    # Flushed per message: a reader sees everything before close (crash safety).
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    sink.close()
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    back = [json.loads(line) for line in lines]
    assert back == msgs
    assert back[2]["type"] == "eos" and back[2]["error"] == "rtsp: lost"
    for m in back:  # what a JSONL consumer reads is valid protocol
        protocol.validate(m)
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(msgs[0])


def test_jsonl_append_and_nan_refused(tmp_path: Path, frame_msg) -> None:
    p = tmp_path / "a.jsonl"
    with JsonlSink(p) as s:
        s.write(frame_msg(seq=0))
    with JsonlSink(p, append=True) as s:
        s.write(frame_msg(seq=1))
        bad = frame_msg(seq=2)
        bad["faces"][0]["confidence"] = float("nan")
        with pytest.raises(ValueError):
            s.write(bad)
    assert [json.loads(x)["seq"] for x in p.read_text().splitlines()] == [0, 1]


# ----------------------------------------------------------------------------- CSV styles
GOLDEN = Path(__file__).resolve().parent / "golden"


# OpenFace 2.2's FeatureExtraction header (RecorderCSV.cpp, a sequence, with gaze, pose, 2D and
# 3D landmarks, shape parameters and AUs), without what it measures and we do not: its 56 eye
# landmarks (eye_lmk_*) and shape-model parameters (p_*).
OPENFACE_22 = (
    ["frame", "face_id", "timestamp", "confidence", "success",
     "gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z",
     "gaze_angle_x", "gaze_angle_y",
     "pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    + [f"{a}_{i}" for a in ("x", "y", "X", "Y", "Z") for i in range(68)]
    + [f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)]
    + [f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45)])


def test_openface_header_matches_the_golden_file(tmp_path: Path, frame_msg) -> None:
    # The golden files are the reviewed headers: a change to the OpenFace-style columns must be
    # a deliberate edit of them (and of CHANGELOG.md), never a side effect.
    for landmarks, name in ((False, "openface_header.csv"), (True, "openface_header_landmarks.csv")):
        sink = CsvSink(tmp_path / name, style="openface", landmarks=landmarks)
        sink.close()
        header = (tmp_path / name).read_text().splitlines()[0]
        assert header == (GOLDEN / name).read_text().strip()
    cols = (GOLDEN / "openface_header.csv").read_text().strip().split(",")
    # every column OpenFace 2.2 writes for what we measure, in OpenFace's order
    assert [c for c in cols if c in OPENFACE_22] == OPENFACE_22
    assert cols[:len(OPENFACE_22) - 35] == OPENFACE_22[:-35]  # up to the AUs: the same columns
    r_cols = [c for c in cols if c.endswith("_r")]
    c_cols = [c for c in cols if c.endswith("_c")]
    assert r_cols == sorted(r_cols) and c_cols == sorted(c_cols)  # sorted, as OpenFace sorts
    assert cols.index(r_cols[-1]) < cols.index(c_cols[0])  # every _r before every _c
    assert set(r_cols) - set(OPENFACE_22) == {"AU24_r", "AU43_r"}  # ours only
    assert cols.index(c_cols[-1]) < cols.index("emotion_neutral")  # ours after OpenFace's
    assert not [c for c in cols if c.startswith(("eye_lmk", "p_", "mp_"))]
    with_lm = (GOLDEN / "openface_header_landmarks.csv").read_text().strip().split(",")
    mp = [c for c in with_lm if c.startswith("mp_")]
    assert mp == [f"mp_{a}_{i}" for a in "xyz" for i in range(478)]
    assert with_lm.index("mp_x_0") > with_lm.index("source")


def test_openface_rows_follow_openfaces_conventions(tmp_path: Path, frame_msg) -> None:
    import math

    from norface_rt.faces.pose import openface_rotation

    sink = CsvSink(tmp_path / "of.csv", style="openface")
    sink.write(frame_msg(seq=0, n_faces=2, pts=0.0))
    sink.write(frame_msg(seq=1, n_faces=0, pts=0.04))  # no face: a success=0 row
    bad = frame_msg(seq=2, n_faces=0, error="cannot decode image x.jpg")
    bad["pts"] = None
    sink.write(bad)
    sink.write(protocol.eos_message(EndOfStream("cam0", 3), 3))
    sink.close()
    _, rows = read_csv(tmp_path / "of.csv")
    assert [r["frame"] for r in rows] == ["1", "1", "2", "3"]  # 1-based, one row per face
    assert [r["success"] for r in rows] == ["1", "1", "0", "0"]
    # no face: numbers where OpenFace writes numbers, with its decimals
    assert (rows[2]["confidence"], rows[2]["face_id"], rows[2]["AU12_r"], rows[2]["AU12_c"],
            rows[2]["gaze_angle_x"], rows[2]["x_0"]) == ("0.00", "0", "0.00", "0.0", "0.000", "0.0")
    assert rows[2]["timestamp"] == "0.040" and rows[3]["timestamp"] == "0.000"  # a still: 0
    face = frame_msg(seq=0, n_faces=2, pts=0.0)["faces"][0]
    rx, ry, rz = openface_rotation(10.0, -5.0, 2.5)  # the pose make_face gives every face
    assert rows[0]["pose_Rx"] == f"{rx:.3f}" and rows[0]["pose_Ry"] == f"{ry:.3f}"
    assert float(rows[0]["pose_Rz"]) == pytest.approx(rz, abs=5e-4)
    assert abs(float(rows[0]["pose_Ry"])) == pytest.approx(math.radians(10.0), abs=0.01)
    assert rows[0]["face_id"] == str(face["track_id"])
    assert rows[0]["AU12_c"] in ("0.0", "1.0") and rows[0]["AU12_r"] == f"{face['au_intensity']['AU12']:.2f}"
    assert rows[0]["confidence"] == "0.93" and rows[0]["top_emotion"] == face["top_emotion"]
    # a message without landmarks, blendshapes or gaze: those cells are unknown, not zero
    assert rows[0]["x_0"] == "" and rows[0]["AU45_r"] == "" and rows[0]["gaze_0_z"] == "0.000000"


def test_openface_csv_of_a_real_run_loads_in_pandas_with_openfaces_columns(
        tmp_path: Path, media_dir: Path, landmarker_path: Path) -> None:
    """Issue 21, point 4: the OpenFace-style CSV of single_face.mp4 loads in pandas with integer
    frame/face_id and every column OpenFace 2.2 writes for the outputs we have, the 68 points
    being iBUG's (x_36..x_47 are the eyes), with gaze, head position and AU45."""
    import subprocess
    import sys

    import pandas as pd

    from norface_rt.faces.ibug68 import IBUG68_FROM_MEDIAPIPE

    out = tmp_path / "of.csv"
    res = subprocess.run([sys.executable, "-m", "norface_rt", "run", str(media_dir / "single_face.mp4"),
                          "--landmarker", str(landmarker_path), "--csv", str(out), "--csv-style",
                          "openface", "--landmarks", "--jsonl", str(tmp_path / "r.jsonl"),
                          "--quiet"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out)
    assert len(df) == 72 and [c for c in df.columns if c in OPENFACE_22] == OPENFACE_22
    for col in ("frame", "face_id", "success"):
        assert pd.api.types.is_integer_dtype(df[col]), (col, df[col].dtype)
    assert df["frame"].tolist() == list(range(1, 73)) and (df["success"] == 1).all()
    assert not df[OPENFACE_22].isna().any().any()  # numbers in every OpenFace column
    # the 68 points are iBUG's, taken from MediaPipe's mesh by the documented map
    mp_x = df[[f"mp_x_{i}" for i in IBUG68_FROM_MEDIAPIPE]].to_numpy()
    np.testing.assert_allclose(df[[f"x_{i}" for i in range(68)]].to_numpy(), mp_x, atol=0.051)
    eyes_x = df[[f"x_{i}" for i in range(36, 48)]].to_numpy()
    face_w = df["x_16"] - df["x_0"]
    assert ((eyes_x.mean(axis=1) - df["x_30"]).abs() < 0.1 * face_w).all()  # eyes either side of the nose
    assert (df["x_45"] > df["x_42"]).all() and (df["x_39"] < df["x_42"]).all()
    assert (df["y_8"] > df["y_57"]).all() and (df["y_57"] > df["y_33"]).all()  # chin, lip, nose
    # head 30-60 cm in front of the camera, 3-D points around it in millimetres
    assert df["pose_Tz"].between(200, 800).all()  # a webcam at arm's length, in mm
    assert (df["Z_30"] < df["Z_0"]).all()  # the nose tip is nearer than the jaw's end
    norms = np.linalg.norm(df[["gaze_0_x", "gaze_0_y", "gaze_0_z"]].to_numpy(), axis=1)
    closed = norms == 0  # a blink: no gaze, zeros as OpenFace writes them
    assert closed.sum() <= 3 and np.allclose(norms[~closed], 1.0, atol=2e-5)
    assert df["AU45_r"].between(0, 5).all() and set(df["AU45_c"]) <= {0.0, 1.0}
    text = out.read_text().splitlines()[1].split(",")
    header = out.read_text().splitlines()[0].split(",")
    cell = dict(zip(header, text))
    assert len(cell["timestamp"].split(".")[1]) == 3 and len(cell["gaze_0_x"].split(".")[1]) == 6
    assert len(cell["pose_Tx"].split(".")[1]) == 1 and len(cell["AU12_r"].split(".")[1]) == 2


def test_openface_style_writes_one_file_per_stream(tmp_path: Path, frame_msg) -> None:
    sink = CsvSink(tmp_path / "of.csv", style="openface", multiple=True)
    sink.write(frame_msg(seq=0, n_faces=1, stream_id="cam0"))
    sink.write(frame_msg(seq=0, n_faces=1, stream_id="cam1"))
    sink.write(frame_msg(seq=1, n_faces=0, stream_id="cam0"))
    sink.close()
    assert sorted(p.name for p in sink.paths) == ["of-cam0.csv", "of-cam1.csv"]
    _, a = read_csv(tmp_path / "of-cam0.csv")
    _, b = read_csv(tmp_path / "of-cam1.csv")
    assert [r["success"] for r in a] == ["1", "0"] and len(b) == 1


def test_default_style_has_source_quality_and_optional_columns(tmp_path: Path) -> None:
    import time as _time

    from norface_rt.config import BLENDSHAPE_NAMES
    from norface_rt.types import FaceQuality, FaceResult, FrameResult

    face = FaceResult(track_id=3, box=(10.0, 20.0, 110.0, 140.0), confidence=0.3, pose=None,
                      au_occurrence={a: 0.5 for a in AU_NAMES},
                      au_intensity={a: 1.0 for a in AU_NAMES},
                      emotions={e: 1.0 / len(EMOTION_NAMES) for e in EMOTION_NAMES},
                      top_emotion=EMOTION_NAMES[0], model_id="m")
    face.landmarks = np.tile(np.array([[50.0, 60.0, -3.0]], np.float32), (478, 1))
    face.blendshapes = {b: 0.25 for b in BLENDSHAPE_NAMES}
    face.quality = FaceQuality(("small_face", "low_confidence"))
    fr = FrameResult(stream_id="photos", seq=0, frame_index=4, pts=None,
                     capture_time=_time.time(), width=640, height=360, dropped=0, faces=[face],
                     untrained=False, source="photos/e.jpg")
    msg = fr.to_message(landmarks=True, blendshapes=True)
    sink = CsvSink(tmp_path / "d.csv", landmarks=True, blendshapes=True)
    sink.write(msg)
    sink.close()
    cols, (row,) = read_csv(tmp_path / "d.csv")
    assert row["source"] == "photos/e.jpg" and row["frame"] == "4"
    assert row["quality"] == "small_face;low_confidence"
    assert (row["x_0"], row["y_477"], row["z_10"]) == ("50.0", "60.0", "-3.0")
    assert row["blendshape_jawOpen"] == "0.25" and row["blendshape__neutral"] == "0.25"
    assert cols.index("roll") < cols.index("x_0") < cols.index("AU01_c")
    assert cols.index("emotion_contempt") < cols.index("blendshape__neutral") < cols.index("top_emotion")
    # asking for landmark columns without landmarks in the messages is named, not blanked
    sink = CsvSink(tmp_path / "e.csv", landmarks=True)
    with pytest.raises(ValueError, match="landmarks: expected 478"):
        sink.write(fr.to_message())
    sink.close()
    with pytest.raises(ValueError, match="--csv-style must be one of"):
        CsvSink(tmp_path / "f.csv", style="excel")
