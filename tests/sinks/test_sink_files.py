"""JSONL and CSV sinks on real messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

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
