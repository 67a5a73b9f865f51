"""One thread and one bounded buffer per sink, so a slow or stalled output holds up nobody else.

A sink that blocks -- JSONL written to a pipe whose reader stopped, a file on a hung network
mount, a PUSH consumer that stopped pulling -- would otherwise stall the thread that calls it and,
through the pipeline's bounded queues, every other sink and the decoders. :class:`SinkWorker`
puts a bounded buffer and a thread in front of each sink; the publish thread only ever hands
messages to buffers (:meth:`SinkWorker.offer`), with a policy for a full buffer:

``block``  wait for room, for at most ``stall_timeout`` seconds (None: as long as it takes). A
           sink that keeps up slowly applies back-pressure, as a lossless file run needs; one
           that makes no room in ``stall_timeout`` is marked *stalled* and further messages are
           dropped at once (counted) until its buffer has drained to half, so a stall costs the
           pipeline at most one wait;
``drop``   never wait: a message that finds the buffer full is dropped (counted), what live
           sources need.

End-of-stream messages are never dropped: they may exceed the bound by one slot each. Every loss
is counted per sink (``dropped``: never handed to the sink; ``failed``: the sink raised;
``unconfirmed``: handed on, but no receiver confirmed it by the time the sink closed, for sinks
whose receivers acknowledge), and the pipeline reports the counts in stats, end-of-stream
messages and the CLI summary.

Shutdown is bounded whatever a sink is doing: :meth:`SinkWorker.finish` asks the thread to write
what is buffered and close the sink, and :meth:`SinkWorker.join` waits with a deadline. A thread
still stuck inside the sink then is abandoned (``abandoned``); it is a daemon thread, and the CLI
leaves the process without waiting for it (a thread blocked in ``write(2)`` cannot be woken).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from norface_rt.sinks.base import BufferPolicy, MessageDropped, ResultSink, Sink
from norface_rt.types import FrameResult
from norface_rt.wire.messages import Message

log = logging.getLogger(__name__)

# A sink's buffer (messages) and how long a lossless run waits for room in a full one before the
# sink is marked stalled: the defaults of `run`'s --sink-buffer and --sink-timeout.
DEFAULT_CAPACITY = 1024
DEFAULT_STALL_TIMEOUT = 2.0
# Images kept for one image sink (the overlay) at most, whatever the message count: an 8K frame is
# 100 MB, so a count alone would not bound memory.
MAX_IMAGE_BYTES = 256 * 2**20
# How often an idle worker lets its sink do housekeeping (Sink.tick: subscription notifications).
_IDLE_S = 0.1
_LOGGED_FAILURES = 3  # tracebacks logged per sink; later failures are only counted


@dataclass(slots=True)
class _Close:
    """The last item of a worker's buffer: close the sink and leave."""


@dataclass(slots=True)
class _Item:
    """One buffered message, its frame's pixels (image sinks) and its typed result
    (:class:`~norface_rt.sinks.base.ResultSink`)."""

    msg: Message
    image: np.ndarray | None
    result: FrameResult | None


class SinkWorker:
    """Runs ``sink`` on its own thread behind a buffer of ``capacity`` messages."""

    def __init__(self, sink: Sink, name: str, *, capacity: int = DEFAULT_CAPACITY,
                 policy: BufferPolicy | str = BufferPolicy.BLOCK,
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
                 max_image_bytes: int = MAX_IMAGE_BYTES) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity: expected an integer >= 1, got {capacity!r}")
        policy = BufferPolicy.parse(policy, "policy")
        if stall_timeout is not None and not stall_timeout > 0:
            raise ValueError(f"stall_timeout: expected a number > 0 (seconds) or None, "
                             f"got {stall_timeout!r}")
        self.sink = sink
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self.stall_timeout = stall_timeout
        self.max_image_bytes = max_image_bytes
        self._items: deque[_Item | _Close] = deque()
        self._image_bytes = 0
        self._cond = threading.Condition()
        self._released = False  # no more waiting for room (shutdown)
        self._closing = False  # finish() was called: no more offers
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.stalled = False
        self.closed = False
        self.abandoned = False
        self.last_progress = time.monotonic()

    # ------------------------------------------------------------------ publish-thread side
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"sink worker {self.name!r} already started")
        self._thread = threading.Thread(target=self._run, name=f"norface-sink-{self.name}",
                                        daemon=True)
        self._thread.start()

    def offer(self, msg: Message, image: np.ndarray | None = None, *,
              result: FrameResult | None = None, final: bool = False) -> bool:
        """Hand one message to the sink's buffer; False when it was dropped (counted).

        ``result`` is the frame's typed result, handed to a
        :class:`~norface_rt.sinks.base.ResultSink` instead of ``msg``. ``final``
        (end-of-stream) messages are never dropped or delayed."""
        nbytes = int(image.nbytes) if image is not None else 0
        with self._cond:
            if self._closing:
                self.dropped += 1
                return False
            if not final and self._full(nbytes):
                if not self._wait_for_room(nbytes):
                    self.dropped += 1
                    return False
            self._items.append(_Item(msg, image, result))
            self._image_bytes += nbytes
            self._cond.notify_all()
            return True

    def _full(self, nbytes: int) -> bool:
        if len(self._items) >= self.capacity:
            return True
        return bool(nbytes) and self._image_bytes > 0 and \
            self._image_bytes + nbytes > self.max_image_bytes

    def _wait_for_room(self, nbytes: int) -> bool:
        """Called with the lock held and the buffer full: True once there is room."""
        if self.policy is BufferPolicy.DROP or self.stalled or self._released:
            return False
        deadline = None if self.stall_timeout is None else time.monotonic() + self.stall_timeout
        while self._full(nbytes):
            if self._released or self._closing:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.stalled = True
                log.warning("output %s made no room for %.1f s: marked stalled, its messages are "
                            "dropped (and counted) until it catches up", self.name,
                            self.stall_timeout)
                return False
            self._cond.wait(left)
        return True

    def release(self) -> None:
        """Stop waiting for room from now on (shutdown): a blocked ``offer`` returns at once."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def finish(self) -> None:
        """No more messages: write what is buffered, then close the sink (on its thread)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._items.append(_Close())
            self._cond.notify_all()
        if self._thread is None:  # never started: close here, nothing can be blocked yet
            self._close_sink()

    def join(self, deadline: float | Callable[[], float], *,
             stall_timeout: float | None = None) -> bool:
        """Wait until the sink is closed, at most until ``deadline`` (monotonic; a function is
        asked again every 0.1 s, so it may be brought in meanwhile), and, with ``stall_timeout``,
        no longer than that without progress. True when it closed; otherwise the sink is
        interrupted, what is left in the buffer is counted as dropped and the thread is
        abandoned."""
        def until() -> float:
            return deadline() if callable(deadline) else deadline

        if self._thread is not None:
            while self._thread.is_alive():
                now = time.monotonic()
                if now >= until():
                    break
                if stall_timeout is not None and now - self.last_progress > stall_timeout:
                    break
                self._thread.join(max(0.0, min(0.1, until() - now)))
        if self._thread is None or not self._thread.is_alive():
            return True
        try:
            self.sink.interrupt()
        except Exception:
            log.exception("interrupting output %s failed", self.name)
        self._thread.join(0.5)
        if not self._thread.is_alive():
            return True
        with self._cond:
            left = sum(1 for it in self._items if not isinstance(it, _Close))
            self._items.clear()
            self.dropped += left
            self.abandoned = True
        log.warning("output %s is stuck (no progress for %.1f s); %d buffered message(s) lost and "
                    "the output abandoned", self.name, time.monotonic() - self.last_progress, left)
        return False

    @property
    def queued(self) -> int:
        with self._cond:
            return sum(1 for it in self._items if not isinstance(it, _Close))

    @property
    def unconfirmed(self) -> int:
        """What the sink handed on and no receiver confirmed (known once it is closed)."""
        try:
            return int(self.sink.unconfirmed)
        except Exception:  # counting must never take the sink down
            return 0

    @property
    def losses(self) -> int:
        return self.dropped + self.failed + self.unconfirmed

    def counters(self) -> dict[str, Any]:
        """The sink's entry in the stats message (``sinks``)."""
        try:
            extra = {k: v for k, v in self.sink.stats().items()
                     if isinstance(v, (bool, int, float))}
        except Exception:  # stats must never take the sink down
            extra = {}
        unconfirmed = {"unconfirmed": n} if (n := self.unconfirmed) else {}
        return {**extra, "written": self.written, "dropped": self.dropped, "failed": self.failed,
                **unconfirmed, "queued": self.queued, "stalled": self.stalled or self.abandoned}

    # ------------------------------------------------------------------ sink thread
    def _run(self) -> None:
        # A sink with gather_s takes everything buffered in one go and then lets the next
        # messages gather for that long (Sink.gather_s); the others take one message at a time.
        gather = float(self.sink.gather_s) if not isinstance(self.sink, ResultSink) else 0.0
        while True:
            with self._cond:
                if not self._items:
                    self._cond.wait(_IDLE_S)
                taken: list[_Item | _Close] = []
                if gather > 0:
                    taken.extend(self._items)
                    self._items.clear()
                elif self._items:
                    taken.append(self._items.popleft())
                for item in taken:
                    if isinstance(item, _Item) and item.image is not None:
                        self._image_bytes -= int(item.image.nbytes)
                if self.stalled and len(self._items) <= self.capacity // 2:
                    self.stalled = False
                    log.warning("output %s caught up; %d message(s) lost so far", self.name,
                                self.dropped)
                self._cond.notify_all()
            if not taken:
                if self.abandoned:  # given up while blocked: once unblocked, just leave
                    self._close_sink()
                    return
                self._tick()
                continue
            items = [it for it in taken if isinstance(it, _Item)]  # _Close comes last, if at all
            if gather > 0:
                self._write_many(items)
            elif items:
                self._write(items[0])
            if isinstance(taken[-1], _Close):
                self._close_sink()
                return
            if gather > 0:
                time.sleep(gather)

    def _write(self, item: _Item) -> None:
        msg = item.msg
        try:
            if item.result is not None and isinstance(self.sink, ResultSink):
                self.sink.write_result(item.result)
            elif self.sink.needs_image:
                self.sink.write(msg, item.image)
            else:
                self.sink.write(msg)
            self.written += 1
        except MessageDropped:
            self.dropped += 1
        except Exception:  # a broken sink is reported, the others keep receiving
            self.failed += 1
            if self.failed <= _LOGGED_FAILURES:
                log.exception("output %s failed on a %s message", self.name, msg["type"])
        self.last_progress = time.monotonic()

    def _write_many(self, items: list[_Item]) -> None:
        """One ``write_many`` for a gathered batch; if it raises, the batch counts as failed
        (the sinks that gather keep no per-message outcome)."""
        if not items:
            return
        try:
            self.sink.write_many([(it.msg, it.image if self.sink.needs_image else None)
                                  for it in items])
            self.written += len(items)
        except Exception:
            if self.failed < _LOGGED_FAILURES:
                log.exception("output %s failed on %d message(s)", self.name, len(items))
            self.failed += len(items)
        self.last_progress = time.monotonic()

    def _tick(self) -> None:
        try:
            self.sink.tick()
        except Exception:
            log.exception("output %s failed while idle", self.name)
        self.last_progress = time.monotonic()

    def _close_sink(self) -> None:
        try:
            self.sink.close()
        except Exception:
            self.failed += 1
            log.exception("closing output %s failed", self.name)
        self.closed = True
        self.last_progress = time.monotonic()

    def __repr__(self) -> str:
        return (f"SinkWorker({self.name!r}, policy={self.policy!r}, written={self.written}, "
                f"dropped={self.dropped}, failed={self.failed})")
