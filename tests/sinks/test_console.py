"""The terminal summary of a run given no output (norface_rt.sinks.console)."""

from __future__ import annotations

import io

from norface_rt.sinks.console import SummarySink, summary_line
from norface_rt.types import EndOfStream
from norface_rt.wire.messages import as_message


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_stream_each_interval_and_one_at_the_end(frame_msg) -> None:
    out, clock = io.StringIO(), Clock()
    sink = SummarySink(out, interval=1.0, totals={"cam0": 75}, clock=clock)
    for seq in range(75):  # 3 s of video analysed at 32 frames/s
        clock.now = 100.0 + seq / 32
        sink.write(frame_msg(seq=seq, n_faces=2, pts=seq / 25.0))
    sink.write(EndOfStream("cam0", frames=75).to_wire(75))
    sink.close()
    lines = out.getvalue().splitlines()
    first = as_message(frame_msg(seq=0, n_faces=2, pts=0.0))
    assert lines[0] == summary_line(first, 75)
    assert lines[0].startswith("cam0  0:00.0  frame 1/75  2 faces: #1 ")
    assert [x[:25] for x in lines[1:4]] == ["cam0  0:01.3  frame 33/75", "cam0  0:02.6  frame 65/75",
                                            "cam0  0:03.0  frame 75/75"]  # the last before the end
    assert lines[4:] == ["cam0  ended after 75 frames"]


def test_a_line_names_the_file_of_a_still_and_errors(frame_msg) -> None:
    msg = dict(frame_msg(seq=2, n_faces=0), source="/photos/b.jpg", pts=None,
               error="cannot decode image /photos/b.jpg", width=0, height=0)
    assert summary_line(as_message(msg), 3) == (
        "cam0  frame 3/3  b.jpg  no face  ERROR: cannot decode image /photos/b.jpg")
