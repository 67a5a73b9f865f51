"""File sinks: JSON Lines (every message, lossless) and CSV (one row per face per frame).

JSONL is the complete record: frames, end-of-stream (with its error) and stats, one JSON object per
line, in publish order. CSV is the analysis-friendly table in the OpenFace / py-feat style; it only
holds faces, so frames without faces produce no row (the JSONL keeps them), and ``eos``/``stats``
messages are not written to it.

CSV AU columns, per AU in label order (OpenFace naming, but see ``_c``):
  ``AUxx_c`` occurrence, 0 or 1 (probability >= ``occurrence_threshold``, default 0.5), what
             OpenFace's ``_c`` columns mean, so scripts written for OpenFace read it correctly;
  ``AUxx_p`` occurrence probability in [0, 1], the unthresholded model output;
  ``AUxx_r`` intensity in [0, 5].
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.sinks.base import Sink

BASE_COLUMNS = ("stream_id", "frame", "timestamp", "capture_time", "face_id", "confidence",
                "x0", "y0", "x1", "y1", "yaw", "pitch", "roll")
TAIL_COLUMNS = ("top_emotion", "untrained")


def _open_text(path: str | Path, append: bool) -> TextIO:
    p = Path(path)
    if p.parent and not p.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {p.parent} (for {p})")
    return open(p, "a" if append else "w", encoding="utf-8", newline="")  # noqa: SIM115


class JsonlSink(Sink):
    """Writes each message as one compact JSON line; flushed per message so a crash loses nothing."""

    name = "jsonl"

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        self.path = Path(path)
        self._f: TextIO | None = _open_text(self.path, append)
        self.written = 0

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        if self._f is None:
            raise RuntimeError(f"JsonlSink({self.path}) is closed")
        # allow_nan=False: NaN/Infinity are not JSON; the protocol never produces them.
        self._f.write(json.dumps(msg, ensure_ascii=False, separators=(",", ":"),
                                 allow_nan=False) + "\n")
        self._f.flush()
        self.written += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _cell(v: float | None) -> str:
    """Shortest round-trip text for a float; empty for missing (pandas reads it as NaN)."""
    if v is None:
        return ""
    return repr(float(v))


class CsvSink(Sink):
    """One row per face per frame; see the module docstring for the columns.

    AU and emotion columns come from ``au_names`` / ``emotion_names`` when given, otherwise from the
    first face written (its key order), otherwise (no face ever seen) from the project defaults
    so the file always has a header. A later face whose keys differ is refused with an error naming
    the field and both key sets, instead of silently shifting columns.
    """

    name = "csv"

    def __init__(self, path: str | Path, au_names: Sequence[str] | None = None,
                 emotion_names: Sequence[str] | None = None, *,
                 occurrence_threshold: float = 0.5) -> None:
        if not 0.0 <= occurrence_threshold <= 1.0:
            raise ValueError(f"occurrence_threshold: expected a number in [0, 1], got "
                             f"{occurrence_threshold}")
        self.path = Path(path)
        self.occurrence_threshold = float(occurrence_threshold)
        self._f: TextIO | None = _open_text(self.path, append=False)
        self._w = csv.writer(self._f, lineterminator="\n")
        self._aus: tuple[str, ...] | None = tuple(au_names) if au_names is not None else None
        self._emos: tuple[str, ...] | None = (tuple(emotion_names) if emotion_names is not None
                                              else None)
        self.columns: list[str] | None = None
        self.rows = 0
        if self._aus is not None and self._emos is not None:
            self._write_header()

    def _write_header(self) -> None:
        assert self._aus is not None and self._emos is not None
        self.columns = [*BASE_COLUMNS,
                        *(f"{a}_c" for a in self._aus), *(f"{a}_p" for a in self._aus),
                        *(f"{a}_r" for a in self._aus),
                        *(f"emotion_{e}" for e in self._emos), *TAIL_COLUMNS]
        self._w.writerow(self.columns)

    def _check_keys(self, field: str, got: dict[str, Any], expected: tuple[str, ...]) -> None:
        if set(got) != set(expected):  # order may differ: cells are looked up by name
            raise ValueError(f"{field}: expected keys {list(expected)} (the CSV columns), "
                             f"got {list(got)}")

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        if self._f is None:
            raise RuntimeError(f"CsvSink({self.path}) is closed")
        if msg.get("type") != "frame" or not msg["faces"]:
            return
        if self.columns is None:
            first = msg["faces"][0]
            if self._aus is None:
                self._aus = tuple(first["au_occurrence"])
            if self._emos is None:
                self._emos = tuple(first["emotions"])
            self._write_header()
        assert self._aus is not None and self._emos is not None
        for face in msg["faces"]:
            self._check_keys("au_occurrence", face["au_occurrence"], self._aus)
            self._check_keys("au_intensity", face["au_intensity"], self._aus)
            self._check_keys("emotions", face["emotions"], self._emos)
        untrained = "1" if msg["untrained"] else "0"
        for face in msg["faces"]:
            pose = face["pose"] or {}
            occ, inten, emo = face["au_occurrence"], face["au_intensity"], face["emotions"]
            row = [msg["stream_id"], str(msg["frame_index"]), _cell(msg["pts"]),
                   _cell(msg["capture_time"]), str(face["track_id"]), _cell(face["confidence"]),
                   *(_cell(v) for v in face["box"]),
                   _cell(pose.get("yaw")), _cell(pose.get("pitch")), _cell(pose.get("roll")),
                   *("1" if occ[a] >= self.occurrence_threshold else "0" for a in self._aus),
                   *(_cell(occ[a]) for a in self._aus),
                   *(_cell(inten[a]) for a in self._aus),
                   *(_cell(emo[e]) for e in self._emos),
                   face["top_emotion"], untrained]
            self._w.writerow(row)
            self.rows += 1
        self._f.flush()

    def close(self) -> None:
        if self._f is None:
            return
        if self.columns is None:  # no face ever arrived: still leave a valid, headed CSV
            self._aus = self._aus or AU_NAMES
            self._emos = self._emos or EMOTION_NAMES
            self._write_header()
        self._f.close()
        self._f = None
