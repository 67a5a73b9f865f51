"""What a person sees of a run given no output: one summary line per stream each second.

``norface-rt run clip.mp4`` without ``--jsonl``, ``--csv``, ``--overlay``, ... used to publish on
a ZeroMQ port nobody listened to and print only "73 written": results went nowhere a person could
see. When no output is chosen, the CLI adds this sink on a terminal (and JSON lines on stdout when
stdout is a pipe or a file, :class:`~norface_rt.sinks.files.JsonlSink` with path ``-``), so every
run shows what it found::

    single_face  0:01.0  frame 25/72  1 face: #0 happy 93%
    single_face  0:02.0  frame 49/72  1 face: #0 happy 88%
    single_face  ended after 72 frames

A line describes the latest frame of its stream when the line is due (at most one per stream per
``interval`` seconds of wall-clock time, whatever the frame rate), so a long file gives a readable
trickle rather than a flood; the end of each stream gets a line too. The position is the frame's
time in the source (``pts``) when it has one, and the file name for image folders.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np

from norface_rt.sinks.base import Sink
from norface_rt.wire.messages import EosMessage, FaceMessage, FrameMessage, Message, as_message

MAX_FACES_SHOWN = 4  # a line names this many faces, then "+N more"


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60.0)
    return f"{int(m)}:{s:04.1f}"


def _faces(faces: Sequence[FaceMessage], cut: int) -> str:
    n = len(faces) + cut
    if not n:
        return "no face"
    shown = sorted(faces, key=lambda f: f.box[0])[:MAX_FACES_SHOWN]
    parts = [f"#{f.track_id} {f.top_emotion} {f.emotions.get(f.top_emotion, 0.0):.0%}"
             for f in shown]
    more = n - len(shown)
    return (f"{n} face{'s' if n != 1 else ''}: " + ", ".join(parts)
            + (f" (+{more} more)" if more else ""))


def summary_line(msg: FrameMessage, total: int | None = None) -> str:
    """One readable line for a frame: stream, where in the source, faces and top emotions."""
    where = []
    if msg.pts is not None:
        where.append(_clock(msg.pts))
    frame = f"frame {msg.frame_index + 1}" + (f"/{total}" if total else "")
    where.append(frame)
    if msg.source:
        where.append(msg.source.replace("\\", "/").rsplit("/", 1)[-1])
    text = f"{msg.stream_id}  {'  '.join(where)}  " + _faces(msg.faces, msg.faces_cut)
    if msg.error:
        text += f"  ERROR: {msg.error}"
    return text


class SummarySink(Sink):
    """Prints :func:`summary_line` of each stream's latest frame every ``interval`` seconds, and
    a line when a stream ends, to ``stream`` (the terminal). ``totals`` gives the frames each
    stream is expected to hold (by stream id), shown as ``frame i/N``."""

    name = "summary"

    def __init__(self, stream: TextIO, *, interval: float = 1.0,
                 totals: dict[str, int | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"interval: expected a number of seconds > 0, got {interval!r}")
        self.stream = stream
        self.interval = float(interval)
        self.totals = dict(totals or {})
        self._clock = clock
        self._due: dict[str, float] = {}  # stream -> when its next line may be printed
        self._latest: dict[str, FrameMessage] = {}  # frames not yet summarised
        self.lines = 0

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        now = self._clock()
        if isinstance(msg, FrameMessage):
            self._latest[msg.stream_id] = msg
            if now >= self._due.get(msg.stream_id, 0.0):
                self._print(msg.stream_id, now)
        elif isinstance(msg, EosMessage):
            if msg.stream_id in self._latest:
                self._print(msg.stream_id, now)
            end = f"ended after {msg.frames} frame{'s' if msg.frames != 1 else ''}"
            if msg.error:
                end += f" with an error: {msg.error}"
            self._emit(f"{msg.stream_id}  {end}")

    def tick(self) -> None:
        now = self._clock()
        for sid in list(self._latest):
            if now >= self._due.get(sid, 0.0):
                self._print(sid, now)

    def _print(self, stream_id: str, now: float) -> None:
        msg = self._latest.pop(stream_id)
        self._due[stream_id] = now + self.interval
        self._emit(summary_line(msg, self.totals.get(stream_id)))

    def _emit(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        for sid in list(self._latest):
            self._print(sid, self._clock())
