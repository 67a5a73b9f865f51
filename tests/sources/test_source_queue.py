"""FrameQueue: the two overflow policies, bounded waits, and release on close."""

from __future__ import annotations

import threading
import time

import pytest

from norface_rt.sources import FrameQueue


def test_drop_oldest_keeps_newest_in_order_and_counts_drops() -> None:
    q: FrameQueue[int] = FrameQueue(3, "drop_oldest")
    for i in range(10):
        assert q.put(i) is True  # never blocks, never refuses while open
    assert len(q) == 3
    assert q.dropped == 7
    assert [q.get(0.0) for _ in range(3)] == [7, 8, 9]
    assert q.get(0.0) is None
    q.put(10)
    assert q.get(0.0) == 10
    assert q.dropped == 7  # no overflow, no new drops


def test_lossless_put_waits_for_room_and_never_drops() -> None:
    q: FrameQueue[int] = FrameQueue(2, "lossless")
    assert q.put(0) and q.put(1)
    t0 = time.monotonic()
    assert q.put(2, timeout=0.15) is False  # full: times out instead of dropping
    assert time.monotonic() - t0 >= 0.14
    assert q.dropped == 0 and len(q) == 2

    got: list[int] = []

    def consumer() -> None:
        time.sleep(0.1)
        for _ in range(3):
            item = q.get(2.0)
            assert item is not None
            got.append(item)

    th = threading.Thread(target=consumer)
    th.start()
    assert q.put(2, timeout=5.0) is True  # unblocked by the consumer
    th.join(5.0)
    assert got == [0, 1, 2]
    assert q.dropped == 0


def test_close_releases_a_blocked_lossless_put() -> None:
    q: FrameQueue[int] = FrameQueue(1, "lossless")
    q.put(0)
    result: list[bool] = []
    th = threading.Thread(target=lambda: result.append(q.put(1)))  # no timeout: waits for room
    th.start()
    time.sleep(0.1)
    assert th.is_alive()
    t0 = time.monotonic()
    q.close()
    th.join(2.0)
    assert not th.is_alive() and result == [False]
    assert time.monotonic() - t0 < 0.5
    assert q.put(5) is False  # closed queues refuse items under either policy


def test_put_final_exceeds_bound_by_one_and_ignores_close() -> None:
    q: FrameQueue[str] = FrameQueue(2, "lossless")
    q.put("a")
    q.put("b")
    q.close()
    q.put_final("end")
    assert len(q) == 3
    assert q.drain() == ["a", "b", "end"]
    assert len(q) == 0


def test_get_returns_none_after_its_timeout() -> None:
    q: FrameQueue[int] = FrameQueue(1, "drop_oldest")
    t0 = time.monotonic()
    assert q.get(0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True, "2"])
def test_bad_size_is_rejected_naming_the_field(maxsize: object) -> None:
    with pytest.raises(ValueError, match=r"queue_size must be an int >= 1, got"):
        FrameQueue(maxsize, "lossless")  # type: ignore[arg-type]


def test_bad_policy_is_rejected_listing_the_choices() -> None:
    with pytest.raises(ValueError, match=r"policy must be one of .*lossless.*drop_oldest.*'fifo'"):
        FrameQueue(2, "fifo")  # type: ignore[arg-type]
