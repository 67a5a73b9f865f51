"""SinkWorker: a stalled output (a real pipe whose reader stopped reading) costs its own buffer,
never the caller's time beyond one stall timeout, and its losses are counted."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from norface_rt import protocol
from norface_rt.sinks.base import MessageDropped, Sink
from norface_rt.sinks.files import JsonlSink
from norface_rt.sinks.worker import SinkWorker
from norface_rt.types import EndOfStream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def stalled_pipe(tmp_path: Path):
    """A FIFO whose reader is open but never reads: writes block once ~64 KiB are buffered."""
    fifo = tmp_path / "stalled.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield fifo
    finally:
        os.close(reader)  # the blocked writer gets EPIPE and its thread ends


def test_a_stalled_pipe_costs_one_stall_timeout_then_drops_are_counted(stalled_pipe: Path,
                                                                       frame_msg) -> None:
    w = SinkWorker(JsonlSink(stalled_pipe), "jsonl", capacity=8, policy="block",
                   stall_timeout=0.5)
    w.start()
    t0 = time.monotonic()
    for i in range(400):  # ~2 KB each: far more than the pipe and the buffer hold
        w.offer(frame_msg(seq=i))
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"offering 400 messages took {elapsed:.1f} s (one stall is 0.5 s)"
    assert w.stalled and w.dropped > 0
    assert w.offer(protocol.eos_message(EndOfStream("cam0", 400), 400), final=True)  # always in
    w.finish()
    t0 = time.monotonic()
    assert w.join(time.monotonic() + 1.0, stall_timeout=0.5) is False  # stuck in write(2)
    assert time.monotonic() - t0 < 3.0
    assert w.abandoned and w.written + w.dropped + 1 >= 400
    c = w.counters()
    assert c["stalled"] is True and c["dropped"] == w.dropped


def test_drop_policy_never_waits_and_end_of_stream_always_gets_in(frame_msg) -> None:
    gate = threading.Event()

    class Blocked(Sink):
        name = "blocked"

        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            gate.wait(10)
            self.got.append(msg)

        def close(self) -> None:
            pass

    sink = Blocked()
    w = SinkWorker(sink, "blocked", capacity=4, policy="drop")
    w.start()
    t0 = time.monotonic()
    accepted = sum(w.offer(frame_msg(seq=i)) for i in range(100))
    assert time.monotonic() - t0 < 1.0
    assert accepted <= 5 and w.dropped == 100 - accepted
    w.offer(protocol.eos_message(EndOfStream("cam0", 100), 100), final=True)
    gate.set()
    w.finish()
    assert w.join(time.monotonic() + 10)
    assert sink.got[-1]["type"] == "eos" and w.written == accepted + 1


def test_a_sink_that_drops_by_policy_is_counted_as_dropped_not_failed(frame_msg) -> None:
    class Refusing(Sink):
        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            raise MessageDropped("peer queue full")

        def close(self) -> None:
            pass

    w = SinkWorker(Refusing(), "refusing", capacity=16)
    w.start()
    for i in range(5):
        w.offer(frame_msg(seq=i))
    w.finish()
    assert w.join(time.monotonic() + 10)
    assert (w.written, w.dropped, w.failed) == (0, 5, 0)


def test_image_buffer_is_bounded_by_bytes_too(frame_msg) -> None:
    gate = threading.Event()

    class Never(Sink):
        needs_image = True

        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            gate.wait(10)  # stuck until the test lets it go

        def close(self) -> None:
            pass

    w = SinkWorker(Never(), "overlay", capacity=1000, policy="drop",
                   max_image_bytes=10 * 2**20)
    w.start()
    big = np.zeros((1080, 1920, 3), np.uint8)  # 6 MB
    accepted = sum(w.offer(frame_msg(seq=i), big) for i in range(20))
    assert accepted <= 3, "the buffer must not hold 20 full-HD frames (120 MB) for a stuck sink"
    w.release()
    gate.set()  # leave no thread behind for later tests (they count the pipeline's threads)
    w.finish()
    assert w.join(time.monotonic() + 10)


def test_bad_arguments_name_the_field() -> None:
    class Null(Sink):
        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            pass

        def close(self) -> None:
            pass

    with pytest.raises(ValueError, match="capacity: expected an integer >= 1"):
        SinkWorker(Null(), "x", capacity=0)
    with pytest.raises(ValueError, match="policy: expected one of"):
        SinkWorker(Null(), "x", policy="wait")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stall_timeout"):
        SinkWorker(Null(), "x", stall_timeout=0)


def test_a_gathering_sink_takes_what_came_meanwhile_in_one_go_in_order(frame_msg) -> None:
    """gather_s: the sink's thread wakes once per interval, not per message, and every message
    reaches the sink, in order, with its image (the live view's contract)."""
    class Gathering(Sink):
        needs_image = True
        gather_s = 0.05

        def __init__(self) -> None:
            self.batches: list[list[tuple[int, int | None]]] = []

        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            raise AssertionError("a gathering sink is given its messages by write_many")

        def write_many(self, items) -> None:  # type: ignore[no-untyped-def]
            self.batches.append([(m["seq"], None if im is None else int(im[0, 0, 0]))
                                 for m, im in items])

        def close(self) -> None:
            pass

    sink = Gathering()
    w = SinkWorker(sink, "gathering", capacity=1000)
    w.start()
    for i in range(200):
        w.offer(frame_msg(seq=i), np.full((2, 2, 3), i % 256, np.uint8))
        time.sleep(0.001)
    w.finish()
    assert w.join(time.monotonic() + 10)
    got = [item for batch in sink.batches for item in batch]
    assert got == [(i, i % 256) for i in range(200)]
    assert w.written == 200 and w.failed == 0
    # ~0.2 s of offers at 50 ms: a handful of batches, not one per message
    assert 2 <= len(sink.batches) <= 40, [len(b) for b in sink.batches]


def test_a_gathering_sink_that_raises_counts_its_batch_as_failed(frame_msg) -> None:
    class Broken(Sink):
        gather_s = 0.01

        def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
            raise RuntimeError("broken")

        def close(self) -> None:
            pass

    w = SinkWorker(Broken(), "broken", capacity=100)
    w.start()
    for i in range(10):
        w.offer(frame_msg(seq=i))
    w.finish()
    assert w.join(time.monotonic() + 10)
    assert (w.written, w.failed) == (0, 10)
