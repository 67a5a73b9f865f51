"""Common machinery of every frame source: one decode thread feeding one bounded queue.

Decoding runs on its own thread so a slow network read or a heavy decoder never stalls the
analysis stages, and the bounded :class:`~norface_rt.sources.frame_queue.FrameQueue` between them
is the only place where back-pressure or frame dropping happens, with a policy chosen per source.

Contract shared by all sources:

* ``start()`` spawns the thread; ``read(timeout)`` returns a :class:`FramePacket`, the stream's
  single :class:`EndOfStream`, or None when nothing arrived in time; ``stop(timeout)`` never hangs.
* After the last frame exactly one ``EndOfStream`` is emitted, even when the decode thread dies of
  an unexpected exception (its ``error`` then names the exception). ``error=None`` means a clean
  end (including an end requested through ``stop()`` of a source that has no end, such as a
  camera; a file stopped before its end says so).
* ``EndOfStream.frames`` counts the frames the source decoded and queued; ``dropped`` of them were
  evicted by the drop-oldest policy, so ``frames - dropped`` reached (or could reach) the consumer.
* ``frame_index`` counts every frame of the source's timeline: a frame that could not be decoded
  (``skipped``) or, live, that never arrived during an outage (``lost``) still uses its index, so
  a consumer sees where frames are missing. Both counts travel in every later ``FramePacket`` and
  in the ``EndOfStream``, with the skipped indices (:meth:`Source._skip`).
* :meth:`Source.status` says what the stream is doing now (``state``, counters, last error) for
  the pipeline's stats.
* Every ``FramePacket`` carries ``timings[Stage.DECODE]``: seconds of demux + decode + RGB conversion
  spent on that frame (measured with :class:`DecodeClock`), never time blocked on a full queue,
  realtime pacing or waiting for a live camera's next packet.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from norface_rt.sources.frame_queue import FrameQueue, Policy
from norface_rt.types import MAX_LISTED_SKIPS, EndOfStream, FramePacket, Stage

log = logging.getLogger(__name__)

# Source.state values: starting (thread not yet running), connecting (opening a live stream),
# connected (a live stream delivers), reading (a file or folder delivers), retrying (a live stream
# was lost and is being re-opened), ended (the EndOfStream has been queued).
STATES: tuple[str, ...] = ("starting", "connecting", "connected", "reading", "retrying", "ended")


def check_seconds(name: str, value: float) -> float:
    """Validate a seconds argument so a typo fails loudly instead of blocking forever."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0 (seconds), got {value!r}")
    return float(value)


def check_optional_seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0 or None (seconds), got {value!r}")
    return float(value)


def check_stream_id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise ValueError(f"stream_id must be a non-empty string, got {stream_id!r}")
    return stream_id


class DecodeClock:
    """Per-frame decode cost on the decode thread: work time summed between ``take()`` calls.

    Work that yields no frame (a packet the decoder buffers, a file that fails to decode) is
    charged to the next frame delivered, so the sum over frames is the whole decode cost. Time
    between ``pause()`` and ``resume()`` (queue back-pressure, pacing, network waits) is never
    counted; ``take()`` also pauses, so a caller resumes after it has handed the frame on.
    """

    __slots__ = ("_since", "_spent")

    def __init__(self) -> None:
        self._spent = 0.0
        self._since: float | None = None

    def resume(self) -> None:
        """Start counting (no-op when already counting)."""
        if self._since is None:
            self._since = time.perf_counter()

    def pause(self) -> None:
        """Stop counting; what was counted so far is kept for the next ``take()``."""
        if self._since is not None:
            self._spent += time.perf_counter() - self._since
            self._since = None

    def take(self) -> float:
        """Seconds counted since the previous ``take()``; resets and leaves the clock paused."""
        self.pause()
        spent, self._spent = self._spent, 0.0
        return spent


class Source(ABC):
    """A stream of decoded frames produced by one background thread."""

    # True for sources of unrelated still pictures (image files, arrays): their faces are found
    # in MediaPipe's image mode and never tracked or smoothed across frames.
    stills: bool = False

    def __init__(self, stream_id: str, *, queue_size: int, policy: Policy, live: bool) -> None:
        self._stream_id = check_stream_id(stream_id)
        self._queue: FrameQueue[FramePacket | EndOfStream] = FrameQueue(queue_size, policy)
        self._live = bool(live)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._queued = 0  # frames put into the queue (decode thread only)
        self._delivered = 0  # frames returned by read() (consumer thread only)
        self._end: EndOfStream | None = None
        # Indices used by frames that were never queued (decode thread only): skipped + lost.
        self._skipped = 0
        self._skipped_indices: list[int] = []
        self._lost = 0
        self._index_gap = 0
        # What the decode thread is doing (one of STATES); read by status() from other threads.
        self._state = "starting"

    # ---- public API ------------------------------------------------------------------------

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def live(self) -> bool:
        """True when frames arrive in real time and old frames are dropped under back-pressure."""
        return self._live

    @property
    def policy(self) -> Policy:
        return self._queue.policy

    @property
    def frames(self) -> int:
        """Frames delivered to the consumer by ``read()`` so far."""
        return self._delivered

    @property
    def dropped(self) -> int:
        """Frames evicted by the drop-oldest policy so far (always 0 for lossless sources)."""
        return self._queue.dropped

    @property
    def queue_depth(self) -> int:
        """Frames decoded and waiting for the consumer now (a metrics gauge)."""
        return len(self._queue)

    @property
    def skipped(self) -> int:
        """Frames that could not be decoded so far (their indices are missing)."""
        return self._skipped

    @property
    def lost(self) -> int:
        """Live sources: frames estimated missing while disconnected so far."""
        return self._lost

    @property
    def state(self) -> str:
        """One of :data:`STATES`."""
        return self._state

    @property
    def reconnects(self) -> int | None:
        """Live sources: successful re-connections so far; None for sources that do not
        connect (files, folders, arrays)."""
        return None

    def status(self) -> dict[str, Any]:
        """Per-stream fields of the stats message: the state and the counters of frames the
        consumer will never see (subclasses add connection details)."""
        return {"state": self._state, "skipped_frames": self._skipped, "lost_frames": self._lost}

    @property
    def expected_frames(self) -> int | None:
        """How many frames the source says it will deliver, when it knows (a video file's declared
        frame count or duration x frame rate, an image folder's file count); None for live
        streams and unknown lengths. Progress bars use it for their total and ETA."""
        return None

    @property
    def end(self) -> EndOfStream | None:
        """The stream's EndOfStream once ``read()`` has returned it, else None."""
        return self._end

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        """True while the decode thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Spawn the decode thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"source {self._stream_id!r} was already started")
        self._thread = threading.Thread(target=self._main, name=f"source-{self._stream_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def read(self, timeout: float) -> FramePacket | EndOfStream | None:
        """Next frame, the end-of-stream marker, or None when nothing arrived within ``timeout``.

        After the ``EndOfStream`` has been returned, every further call returns None at once.
        """
        timeout = check_seconds("timeout", timeout)
        if self._thread is None:
            raise RuntimeError(f"source {self._stream_id!r}: call start() before read()")
        if self._end is not None:
            return None
        item = self._queue.get(timeout)
        if isinstance(item, FramePacket):
            self._delivered += 1
            item.dropped = self._queue.dropped  # the count as of delivery, not of decoding
        elif isinstance(item, EndOfStream):
            self._end = item
        return item

    def iter_frames(self, timeout: float, *, flagged: bool = False) -> Iterator[FramePacket]:
        """Every frame of a started source up to its end of stream (then in :attr:`end`).

        The one read-until-end loop for callers that process a source by themselves (normalize,
        evaluation, plot): TimeoutError names the source when no frame or end arrives within
        ``timeout`` seconds, so a dead input never hangs them. Frames the source could not
        decode (``error`` set, no pixels: an unreadable file in a folder) are left out unless
        ``flagged``; the end's error still names them."""
        while True:
            item = self.read(timeout)
            if item is None:
                if self._end is not None:
                    return
                raise TimeoutError(f"source {self._stream_id!r}: no frame within {timeout:g} s")
            if isinstance(item, EndOfStream):
                return
            if item.error is None or flagged:
                yield item

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the decode thread to finish, discard queued frames, join it for at most ``timeout``.

        Returns True when the thread has ended. A thread blocked inside a network read ends by
        itself once the source's read timeout expires (it is a daemon thread, so it never keeps
        the interpreter alive). The ``EndOfStream`` the thread emits stays readable afterwards.
        """
        timeout = check_seconds("timeout", timeout)
        self._stop_event.set()
        self._queue.close()
        self._keep_only_eos()
        self._on_stop()
        if self._thread is None:
            self._release()
            return True
        self._thread.join(timeout)
        self._keep_only_eos()
        alive = self._thread.is_alive()
        if alive:
            log.warning("source %s: decode thread still busy %.1f s after stop(); it will exit "
                        "when its current blocking read times out", self._stream_id, timeout)
        return not alive

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(stream_id={self._stream_id!r}, live={self._live}, "
                f"policy={self.policy!r}, frames={self.frames}, dropped={self.dropped})")

    # ---- for subclasses ---------------------------------------------------------------------

    @abstractmethod
    def _produce(self) -> str | None:
        """Decode until the end, a failure or a stop request (runs on the decode thread).

        Return None for a clean end, else a message naming the problem. Call ``_emit`` for each
        frame and return as soon as it yields False or ``_stopping`` is set.
        """

    def _release(self) -> None:  # noqa: B027  (an optional hook: most sources hold nothing)
        """Free resources opened at construction when the thread never ran (override)."""

    def _on_stop(self) -> None:  # noqa: B027  (an optional hook: most sources need none)
        """Hook run by ``stop()`` on the caller's thread before joining (override)."""

    @property
    def _stopping(self) -> bool:
        return self._stop_event.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep for ``seconds`` unless stopped first; True when a stop was requested."""
        return self._stop_event.wait(max(0.0, seconds))

    def _emit(self, packet: FramePacket) -> bool:
        """Queue one frame; False means the source is stopping and decoding should end.

        ``packet.timings[Stage.DECODE]`` must already be set (see :class:`DecodeClock`): this
        call may block on a full queue, which is not decode time.
        """
        if Stage.DECODE not in packet.timings:  # a programming error in a subclass, not bad input
            raise RuntimeError(f"source {self._stream_id!r}: frame {packet.frame_index} has no "
                               "timings[Stage.DECODE] (subclasses must time decoding)")
        if self._stop_event.is_set():
            return False
        packet.skipped, packet.lost = self._skipped, self._lost
        if not self._queue.put(packet):
            return False
        self._queued += 1
        return True

    def _skip(self, n: int = 1, *, lost: bool = False, listed: bool = True) -> None:
        """Give the next ``n`` frame indices to frames that will never be delivered: undecodable
        (``skipped``, their indices listed in the EndOfStream unless ``listed`` is False) or, for
        a live source, missing during an outage (``lost``)."""
        if n <= 0:
            return
        if lost:
            self._lost += n
        else:
            room = MAX_LISTED_SKIPS - len(self._skipped_indices)
            if listed and room > 0:
                start = self._next_index
                self._skipped_indices.extend(range(start, start + min(n, room)))
            self._skipped += n
        self._index_gap += n

    @property
    def _next_index(self) -> int:
        """frame_index for the next frame: everything this source has queued or skipped."""
        return self._queued + self._index_gap

    def _end_fields(self) -> dict[str, Any]:
        """Extra EndOfStream fields of a subclass (live sources: outage time, reconnects)."""
        return {}

    # ---- internals --------------------------------------------------------------------------

    def _main(self) -> None:
        error: str | None
        self._state = "reading"  # live sources say connecting / connected themselves
        try:
            error = self._produce()
        except Exception as exc:  # the thread must always end with an EndOfStream
            log.exception("source %s: decode thread failed", self._stream_id)
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            # an end its owner asked for (stop(): a tool that read what it needed, a signal) is
            # said in the EndOfStream, not warned about as if something had gone wrong
            log.log(logging.INFO if self._stopping else logging.WARNING,
                    "source %s ended with an error: %s", self._stream_id, error)
        self._state = "ended"
        try:
            extra = self._end_fields()
        except Exception:  # the end marker must still go out
            log.exception("source %s: end-of-stream details failed", self._stream_id)
            extra = {}
        self._queue.put_final(EndOfStream(
            stream_id=self._stream_id, frames=self._queued, dropped=self._queue.dropped,
            error=error, skipped=self._skipped, skipped_indices=tuple(self._skipped_indices),
            lost=self._lost, **extra))

    def _keep_only_eos(self) -> None:
        for item in self._queue.drain():
            if isinstance(item, EndOfStream):
                self._queue.put_final(item)
