"""The one bounded hand-off between a source's decode thread and its consumer.

Two policies, because files and cameras want opposite things under back-pressure:

* ``lossless`` (files, image folders, the pipeline's own stages): ``put`` blocks while the queue
  is full, so a slow consumer slows the producer down and nothing is ever lost. Waiters sleep on a
  condition and are woken by every ``get`` and by ``close()``, so a producer blocked on a full
  queue is released by ``Source.stop()`` / ``Pipeline.stop()`` at once, without polling.
* ``drop_oldest`` (live streams): ``put`` never blocks; when full the oldest item is evicted and
  counted in ``dropped``, so the consumer always sees the freshest frames and latency stays bounded
  by ``maxsize`` frames instead of growing without limit.

The terminal item (``put_final``) may exceed the bound by exactly one slot: an end-of-stream marker
must never be dropped and must never block a producer that is shutting down.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Policy = Literal["lossless", "drop_oldest"]
POLICIES: tuple[str, ...] = ("lossless", "drop_oldest")


class FrameQueue(Generic[T]):
    """Bounded FIFO with a lossless or drop-oldest overflow policy (thread-safe)."""

    def __init__(self, maxsize: int, policy: Policy = "lossless") -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {maxsize!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self._maxsize = maxsize
        self._policy: Policy = policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._dropped = 0

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def dropped(self) -> int:
        """Items evicted by the drop-oldest policy so far."""
        with self._cond:
            return self._dropped

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Enqueue ``item``; False when the queue was closed (or, lossless, ``timeout`` expired).

        Lossless blocks while full; drop-oldest evicts the oldest item instead of waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                return False
            if self._policy == "drop_oldest":
                while len(self._items) >= self._maxsize:
                    self._items.popleft()
                    self._dropped += 1
            else:
                while len(self._items) >= self._maxsize:
                    wait = None
                    if deadline is not None:
                        wait = deadline - time.monotonic()
                        if wait <= 0:
                            return False
                    self._cond.wait(wait)
                    if self._closed:
                        return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def put_final(self, item: T) -> None:
        """Enqueue the terminal item: never blocks, never evicts, ignores ``close()``."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None) -> T | None:
        """Oldest item, or None when nothing arrived within ``timeout`` seconds (None: no limit).

        Closing does not end a wait here: a closed queue still delivers its terminal item
        (``put_final``), which is what wakes a consumer."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items),
                                    timeout=None if timeout is None else max(0.0, timeout))
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()  # a lossless producer may be waiting for this slot
            return item

    def close(self) -> None:
        """Refuse further ``put`` calls and wake every waiter (used by ``Source.stop``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self) -> list[T]:
        """Remove and return everything queued, oldest first."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items
