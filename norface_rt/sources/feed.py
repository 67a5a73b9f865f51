"""Pictures handed over one at a time, as one still stream that stays open between them.

What keeps the Python API's pipeline warm across ``Analyzer.analyze_image`` calls: the pipeline
(its MediaPipe graphs, threads and queues) is built once around this source, and each call puts
one picture in and takes one result out, so a photo costs its analysis instead of a pipeline's
start-up every time. Pictures are image files (read and decoded here, on the source's
thread, as :class:`~norface_rt.sources.images.ImageSource` reads a folder's) or HxWx3 uint8 RGB
arrays (checked by the caller). A file that cannot be decoded travels as a flagged frame without
pixels, as in a folder. The stream ends only when :meth:`finish` is called (cleanly).

Waiting pictures are held in a bounded queue (:meth:`put` blocks while it is full), and the
decode thread wakes at once for a picture, a finish or a stop.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from norface_rt.images import DEFAULT_MAX_PIXELS, read_rgb
from norface_rt.sources.base import DecodeClock, Source
from norface_rt.types import FramePacket, Stage

Picture = str | os.PathLike[str] | np.ndarray


class FeedSource(Source):
    """Stills put in by the caller (:meth:`put`), one frame each, in order, until :meth:`finish`."""

    stills = True

    def __init__(self, stream_id: str = "image", queue_size: int = 8, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels  # a file declaring more pixels is refused (its result only)
        super().__init__(stream_id, queue_size=queue_size, policy="lossless", live=False)
        self._capacity = queue_size
        self._pending: deque[Picture] = deque()
        self._finished = False
        self._cond = threading.Condition()

    @property
    def expected_frames(self) -> int | None:
        return None  # as many as the caller will put

    def put(self, picture: Picture, timeout: float | None = None) -> bool:
        """Queue a picture (a path or an RGB array); False when the feed is finished, stopped
        or still full after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._pending) >= self._capacity:
                if self._finished or self._stopping:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.2 if left is None else min(left, 0.2))
            if self._finished or self._stopping:
                return False
            self._pending.append(picture)
            self._cond.notify_all()
        return True

    def finish(self) -> None:
        """No more pictures: the stream ends (cleanly) once those queued are delivered."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _on_stop(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next(self) -> Picture | None:
        with self._cond:
            while not self._pending:
                if self._finished or self._stopping:
                    return None
                self._cond.wait(0.5)
            picture = self._pending.popleft()
            self._cond.notify_all()
            return picture

    def _produce(self) -> str | None:
        clock = DecodeClock()
        while True:
            picture = self._next()
            if picture is None:
                return None
            clock.resume()
            error = source = None
            if isinstance(picture, np.ndarray):
                image = np.ascontiguousarray(picture)
            else:
                source = str(Path(picture))
                try:
                    image = read_rgb(picture, max_pixels=self.max_pixels)
                except (ValueError, OSError) as exc:
                    image, error = np.zeros((0, 0, 3), np.uint8), str(exc)
            packet = FramePacket(stream_id=self.stream_id, frame_index=self._next_index,
                                 image=image, pts=None, capture_time=time.time(), live=False,
                                 timings={Stage.DECODE: clock.take()}, source=source,
                                 error=error)
            if not self._emit(packet):
                return None
