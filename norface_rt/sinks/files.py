"""File sinks: JSON Lines (every message, lossless) and CSV (one row per face per frame).

JSONL is the complete record: frames, end-of-stream (with its error) and stats, one JSON object per
line, in publish order. CSV is the analysis-friendly table; ``eos``/``stats`` messages are not
written to it. Two styles (:data:`CSV_STYLES`), laid out by :class:`CsvLayout`, which
:func:`norface_rt.to_dataframe` uses too, so a DataFrame has exactly the CSV's columns:

``default`` (py-feat-like, one row per face; frames without faces have no row, see the JSONL):
  ``stream_id, frame`` (frame_index, from 0)``, source`` (image file, else empty)``, timestamp``
  (pts, s)``, capture_time, face_id`` (track id)``, confidence, quality`` (``ok`` or the issues,
  ``;``-separated)``, x0, y0, x1, y1, yaw, pitch, roll`` (degrees), [landmarks], then per AU in
  label order ``AUxx_c`` (0/1: probability >= ``occurrence_threshold``, default 0.5, what
  OpenFace's ``_c`` means), ``AUxx_p`` (the probability), ``AUxx_r`` (intensity 0..5), then
  ``emotion_<name>``, [blendshapes], ``top_emotion, untrained``.
``openface`` (OpenFace 2.2's columns, order and decimals, so scripts written for OpenFace read
  it; :mod:`norface_rt.sinks.openface` owns it): ``frame`` (from 1)``, face_id, timestamp,
  confidence, success``, gaze, ``pose_T*`` (mm) and ``pose_R*`` (radians, OpenFace's axes), the
  68 iBUG points ``x_i, y_i`` (pixels) and ``X_i, Y_i, Z_i`` (mm), ``AUxx_r`` then ``AUxx_c``
  (with AU45 and AU28_c from MediaPipe's blendshapes), then ours: ``emotion_<name>,
  top_emotion, quality, source``, MediaPipe's points as ``mp_x_i, mp_y_i, mp_z_i``
  (``--landmarks``), [blendshapes]. A frame without a face (or whose file could not be read)
  gets one row with ``success`` 0 and zeros. One file per stream (OpenFace writes one per
  video): with several streams, ``<stem>-<stream_id>``.

[landmarks] (``--landmarks``, default style): ``x_0..x_477, y_0..y_477`` (pixels) and
``z_0..z_477`` (MediaPipe's relative depth in the same pixel scale, smaller = nearer).
[blendshapes] (``--blendshapes``): ``blendshape_<name>`` for MediaPipe's 52 scores (``_neutral`` included).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from norface_rt.config import AU_NAMES, BLENDSHAPE_NAMES, EMOTION_NAMES, LANDMARK_COUNT, ModelConfig
from norface_rt.files import display_path, open_for_writing, stream_file
from norface_rt.sinks.base import MessageDropped, ResultSink, Sink
from norface_rt.types import FaceResult, FrameResult
from norface_rt.wire.codec import to_json
from norface_rt.wire.messages import LANDMARK_DECIMALS, FrameMessage, Message, as_message

CSV_STYLES: tuple[str, ...] = ("default", "openface")
BASE_COLUMNS = ("stream_id", "frame", "source", "timestamp", "capture_time", "face_id",
                "confidence", "quality", "x0", "y0", "x1", "y1", "yaw", "pitch", "roll")
TAIL_COLUMNS = ("top_emotion", "untrained")


def _open_text(path: str | Path, append: bool) -> TextIO:
    """An output text file; a FIFO is opened without blocking (an error when nobody reads it)."""
    p = Path(path)
    if p.parent and not p.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {display_path(p.parent)} "
                                f"(for {display_path(p)})")
    fd = open_for_writing(p, append=append)
    return open(fd, "a" if append else "w", encoding="utf-8", newline="")  # noqa: SIM115


STDOUT = "-"  # the path that means standard output (--jsonl -)


class JsonlSink(Sink):
    """Writes each message as one compact JSON line; flushed per message so a crash loses nothing.

    ``path`` ``-`` writes to standard output (a pipe: ``norface-rt run clip.mp4 --jsonl - | jq``),
    which is left open at the end."""

    name = "jsonl"

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        import sys

        self.to_stdout = str(path) == STDOUT
        self.reader_gone = False
        self.path = Path(path)
        self._f: TextIO | None = sys.stdout if self.to_stdout else _open_text(self.path, append)
        self.written = 0

    def destination(self) -> str:
        return "stdout" if self.to_stdout else str(self.path)

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        if self._f is None:
            if self.reader_gone:
                raise MessageDropped()
            raise RuntimeError(f"JsonlSink({self.path}) is closed")
        line = to_json(msg) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
        except BrokenPipeError:
            if not self.to_stdout:
                raise
            self._reader_left()
            raise MessageDropped() from None
        self.written += 1

    def _reader_left(self) -> None:
        """stdout's reader closed the pipe (``| head``): say so once, stop writing there (the
        rest is counted as lost) and point stdout at /dev/null, so that flushing it at exit
        raises nothing."""
        import logging
        import os
        import sys

        logging.getLogger(__name__).warning(
            "stdout was closed by its reader after %d message(s); the rest are not written",
            self.written)
        self.reader_gone = True
        self._f = None
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)

    def close(self) -> None:
        if self._f is not None:
            if self.to_stdout:
                self._f.flush()
            else:
                self._f.close()
            self._f = None


def _cell(v: Any) -> str:
    """A CSV cell: shortest round-trip text for a float, empty for missing (pandas reads NaN)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _quality_text(face: FaceResult) -> str | None:
    q = face.quality
    if q is None:
        return None
    return "ok" if q.ok else ";".join(q.issues)


Row = dict[str, Any]  # column -> value (int, float, str); a missing column is an empty cell
Frame = FrameResult | Mapping[str, Any]  # a frame's result, or its message (a dict or typed)


def as_result(frame: Frame) -> FrameResult:
    """A frame's result: itself, or read from its ``frame`` message at this edge."""
    return frame if isinstance(frame, FrameResult) else FrameResult.from_message(frame)


@dataclass(frozen=True)
class CsvLayout:
    """The columns of a CSV style and the rows of a frame: the one owner of the table layout,
    shared by :class:`CsvSink` and :func:`norface_rt.to_dataframe`. Rows are made from a frame's
    :class:`~norface_rt.types.FrameResult` (which holds everything a style writes: landmarks,
    blendshapes, gaze, head position), or from its message, read at the edge
    (:meth:`FrameResult.from_message`)."""

    style: str = "default"
    au_names: tuple[str, ...] = AU_NAMES
    emotion_names: tuple[str, ...] = EMOTION_NAMES
    landmarks: bool = False
    blendshapes: bool = False
    occurrence_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.style not in CSV_STYLES:
            raise ValueError(f"--csv-style must be one of {list(CSV_STYLES)}, got {self.style!r}")
        if not 0.0 <= self.occurrence_threshold <= 1.0:
            raise ValueError(f"occurrence_threshold: expected a number in [0, 1], got "
                             f"{self.occurrence_threshold}")

    @property
    def columns(self) -> list[str]:
        if self.style == "openface":
            from norface_rt.sinks import openface

            return openface.columns(self.au_names, self.emotion_names, landmarks=self.landmarks,
                                    blendshapes=self.blendshapes)
        lms = ([f"x_{i}" for i in range(LANDMARK_COUNT)] + [f"y_{i}" for i in range(LANDMARK_COUNT)]
               + [f"z_{i}" for i in range(LANDMARK_COUNT)]) if self.landmarks else []
        bss = [f"blendshape_{b}" for b in BLENDSHAPE_NAMES] if self.blendshapes else []
        emos = [f"emotion_{e}" for e in self.emotion_names]
        return [*BASE_COLUMNS, *lms, *(f"{a}_c" for a in self.au_names),
                *(f"{a}_p" for a in self.au_names), *(f"{a}_r" for a in self.au_names),
                *emos, *bss, *TAIL_COLUMNS]

    def cell(self, value: Any, column: str) -> str:
        """How a value is written: OpenFace's fixed decimals in its style, else shortest."""
        if self.style == "openface":
            from norface_rt.sinks.openface import cell

            return cell(value, column)
        return _cell(value)

    def check(self, frame: FrameResult) -> None:
        """Refuse a frame whose faces do not fit the columns, naming the field and both key sets
        (instead of silently shifting or blanking columns)."""
        for face in frame.faces:
            _check_keys("au_occurrence", face.au_occurrence, self.au_names)
            _check_keys("au_intensity", face.au_intensity, self.au_names)
            _check_keys("emotions", face.emotions, self.emotion_names)
            if self.landmarks:
                lms = face.landmarks
                if lms is None or len(lms) != LANDMARK_COUNT:
                    got = "none" if lms is None else f"{len(lms)} points"
                    raise ValueError(f"landmarks: expected {LANDMARK_COUNT} [x, y, z] points per "
                                     f"face for the landmark columns, got {got} (run with "
                                     "--landmarks)")
            if self.blendshapes:
                bs = face.blendshapes
                if bs is None:
                    raise ValueError("blendshapes: expected MediaPipe's blendshape scores per face "
                                     "for the blendshape columns, got none (run with "
                                     "--blendshapes and a landmarker bundle that scores them)")
                _check_keys("blendshapes", bs, BLENDSHAPE_NAMES)

    def rows(self, frame: Frame) -> list[Row]:
        """The rows of one frame (none for a message of another type), after :meth:`check`."""
        if not isinstance(frame, FrameResult):
            if frame.get("type") != "frame":
                return []
            frame = as_result(frame)
        self.check(frame)
        if self.style == "openface":
            return self._openface_rows(frame)
        return [self._default_row(frame, face) for face in frame.faces]

    def _default_row(self, frame: FrameResult, face: FaceResult) -> Row:
        pose = face.pose
        x0, y0, x1, y1 = (float(v) for v in face.box)
        row: Row = {
            "stream_id": frame.stream_id, "frame": int(frame.frame_index), "source": frame.source,
            "timestamp": frame.pts, "capture_time": float(frame.capture_time),
            "face_id": int(face.track_id), "confidence": float(face.confidence),
            "quality": _quality_text(face), "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "yaw": None if pose is None else float(pose.yaw),
            "pitch": None if pose is None else float(pose.pitch),
            "roll": None if pose is None else float(pose.roll),
            "untrained": 1 if frame.untrained else 0,
        }
        occ, inten = face.au_occurrence, face.au_intensity
        for a in self.au_names:
            row[f"{a}_c"] = 1 if occ[a] >= self.occurrence_threshold else 0
            row[f"{a}_p"] = float(occ[a])
            row[f"{a}_r"] = float(inten[a])
        if self.landmarks:
            assert face.landmarks is not None  # check() saw them
            pts = np.round(np.asarray(face.landmarks, np.float64), LANDMARK_DECIMALS)
            for axis, name in enumerate("xyz"):
                for i in range(pts.shape[0]):
                    row[f"{name}_{i}"] = float(pts[i, axis])
        if self.blendshapes:
            assert face.blendshapes is not None
            for b in BLENDSHAPE_NAMES:
                row[f"blendshape_{b}"] = float(face.blendshapes[b])
        for e in self.emotion_names:
            row[f"emotion_{e}"] = float(face.emotions[e])
        row["top_emotion"] = face.top_emotion
        return row

    def _openface_rows(self, frame: FrameResult) -> list[Row]:
        from norface_rt.sinks import openface

        if not frame.faces:
            return [openface.empty_row(frame, self.columns)]
        return [openface.face_row(frame, face, au_names=self.au_names,
                                  emotion_names=self.emotion_names,
                                  occurrence_threshold=self.occurrence_threshold,
                                  landmarks=self.landmarks, blendshapes=self.blendshapes,
                                  quality=_quality_text(face))
                for face in frame.faces]


def _check_keys(field: str, got: Mapping[str, Any], expected: Sequence[str]) -> None:
    if set(got) != set(expected):  # order may differ: cells are looked up by name
        raise ValueError(f"{field}: expected keys {list(expected)} (the CSV columns), "
                         f"got {list(got)}")


class _CsvFile:
    """One CSV file of a layout: header first, then rows, flushed per frame."""

    def __init__(self, path: Path, layout: CsvLayout, opened: TextIO | None = None) -> None:
        self.path = path
        self.layout = layout
        self.columns = layout.columns
        self._f: TextIO | None = opened or _open_text(path, append=False)
        self._w = csv.writer(self._f, lineterminator="\n")
        self._w.writerow(self.columns)
        self.rows = 0

    def write(self, rows: list[Row]) -> None:
        if self._f is None:
            raise RuntimeError(f"CSV file {self.path} is closed")
        cell = self.layout.cell
        for row in rows:
            self._w.writerow([cell(row.get(c), c) for c in self.columns])
        self.rows += len(rows)
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class CsvSink(ResultSink):
    """Frames as CSV rows in one of :data:`CSV_STYLES` (see the module docstring).

    AU and emotion columns come from ``au_names`` / ``emotion_names`` when given, else from the
    model the pipeline binds (:meth:`bind_model`), else from the first face written, else (no face
    ever seen) from the project defaults, so the file always has a header. A later face whose
    keys differ is refused with an error naming the field and both key sets. The ``default`` style
    writes every stream to ``path`` (a ``stream_id`` column tells them apart); ``openface`` writes
    one file per stream, ``path`` itself unless ``multiple`` (several sources), then
    ``<stem>-<stream_id><suffix>``.
    """

    name = "csv"

    def __init__(self, path: str | Path, au_names: Sequence[str] | None = None,
                 emotion_names: Sequence[str] | None = None, *,
                 occurrence_threshold: float = 0.5, style: str = "default",
                 landmarks: bool = False, blendshapes: bool = False,
                 multiple: bool = False) -> None:
        self._proto = CsvLayout(style=style, landmarks=landmarks, blendshapes=blendshapes,
                                occurrence_threshold=occurrence_threshold)  # validates the options
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent} "
                                    f"(for {self.path})")
        self.style = style
        self.multiple = multiple
        self.occurrence_threshold = float(occurrence_threshold)
        self._aus: tuple[str, ...] | None = tuple(au_names) if au_names is not None else None
        self._emos: tuple[str, ...] | None = (tuple(emotion_names) if emotion_names is not None
                                              else None)
        self._layout: CsvLayout | None = None
        self._files: dict[str, _CsvFile] = {}
        self._closed = False
        # One file for every stream (default style), opened now so an unwritable path (or a
        # FIFO nobody reads) fails before the run; kept open for the header and the rows.
        self._opened: TextIO | None = (_open_text(self.path, append=False)
                                       if style == "default" else None)
        if self._aus is not None and self._emos is not None:
            self._fix_layout(self._aus, self._emos)

    @property
    def columns(self) -> list[str] | None:
        """The header, once the label names are known."""
        return None if self._layout is None else self._layout.columns

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self._files.values())

    @property
    def paths(self) -> list[Path]:
        """The files written so far."""
        return [f.path for f in self._files.values()]

    def destination(self) -> str:
        return ", ".join(map(str, self.paths or [self.path]))

    def bind_model(self, config: ModelConfig) -> None:
        if self._layout is None:
            self._fix_layout(self._aus or tuple(config.au_names),
                             self._emos or tuple(config.emotion_names))

    def _fix_layout(self, aus: tuple[str, ...], emos: tuple[str, ...]) -> None:
        self._aus, self._emos = aus, emos
        self._layout = CsvLayout(style=self.style, au_names=aus, emotion_names=emos,
                                 landmarks=self._proto.landmarks,
                                 blendshapes=self._proto.blendshapes,
                                 occurrence_threshold=self.occurrence_threshold)
        if self.style == "default":
            self._file_for("")  # the header goes out at once

    def path_for(self, stream_id: str) -> Path:
        if self.style == "default" or (not self.multiple and not self._files):
            return self.path
        return stream_file(self.path, stream_id)

    def _file_for(self, stream_id: str) -> _CsvFile:
        key = "" if self.style == "default" else stream_id
        f = self._files.get(key)
        if f is None:
            assert self._layout is not None
            opened, self._opened = (self._opened, None) if key == "" else (None, self._opened)
            f = self._files[key] = _CsvFile(self.path_for(stream_id), self._layout, opened)
        return f

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if isinstance(msg, FrameMessage):
            self.write_result(FrameResult.from_message(msg))
        elif self._closed:
            raise RuntimeError(f"CsvSink({self.path}) is closed")

    def write_result(self, result: FrameResult) -> None:
        """A frame's rows from its result, which always holds the landmarks, blendshapes, gaze
        and head position the OpenFace style writes, whatever the messages carry."""
        if self._closed:
            raise RuntimeError(f"CsvSink({self.path}) is closed")
        if self._layout is None:
            if not result.faces and self.style == "default":
                return  # nothing to write, nothing learnt
            first = result.faces[0] if result.faces else None
            self._fix_layout(self._aus or (tuple(first.au_occurrence) if first else AU_NAMES),
                             self._emos or (tuple(first.emotions) if first else EMOTION_NAMES))
        assert self._layout is not None
        rows = self._layout.rows(result)  # checks every face before anything is written
        if rows:
            self._file_for(result.stream_id).write(rows)

    def close(self) -> None:
        if self._closed:
            return
        if self._layout is None:  # no face ever arrived: still leave a valid, headed CSV
            self._fix_layout(self._aus or AU_NAMES, self._emos or EMOTION_NAMES)
        if not self._files:
            self._file_for("")
        for f in self._files.values():
            f.close()
        self._closed = True
