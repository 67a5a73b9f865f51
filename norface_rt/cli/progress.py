"""Progress of a run: frames done out of the expected total, with rate and time left.

On a terminal a tqdm bar (percentage and ETA when the sources know their length); otherwise,
when stderr is a log file or a pipe, one plain line every ``interval`` seconds and a last one at
the end, so a batch job's log says how far it got without a bar's carriage returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO


def total_frames(expected: Sequence[int | None]) -> int | None:
    """The sum of the sources' expected frame counts, or None when any source does not know
    (a live stream never ends, so no total is honest)."""
    if not expected or any(e is None for e in expected):
        return None
    return sum(e for e in expected if e is not None)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Counts frames (``update`` from any thread) and reports them to ``stream``."""

    def __init__(self, total: int | None, stream: TextIO, *, interval: float = 10.0,
                 tty: bool | None = None) -> None:
        if not interval > 0:
            raise ValueError(f"--progress-interval must be > 0 seconds, got {interval}")
        self.total = total
        self.stream = stream
        self.interval = float(interval)
        self.done = 0
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._next = self._t0 + self.interval
        self._bar: Any = None
        if stream.isatty() if tty is None else tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="frame", dynamic_ncols=True, file=stream)

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.interval
                self._line(now)

    def line(self) -> str:
        """The plain progress line as it stands now."""
        return self._text(time.monotonic())

    def _text(self, now: float) -> str:
        elapsed = max(now - self._t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            pct = 100.0 * self.done / self.total
            left = max(self.total - self.done, 0)
            eta = _clock(left / rate) if rate > 0 else "?"
            return (f"norface-rt: progress {self.done}/{self.total} frames ({pct:.1f}%), "
                    f"{rate:.1f} frames/s, elapsed {_clock(elapsed)}, ETA {eta}")
        return (f"norface-rt: progress {self.done} frames, {rate:.1f} frames/s, "
                f"elapsed {_clock(elapsed)}")

    def _line(self, now: float) -> None:
        print(self._text(now), file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            else:
                self._line(time.monotonic())
