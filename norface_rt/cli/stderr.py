"""Progress and log lines that never end a run: stderr whose reader went away is written to no
more, silently.

A run's results go to its outputs; stderr only tells a person how it goes. When the reader of
stderr goes away (``norface-rt run ... 2>&1 >/dev/null | head -1``, a closed terminal, a log
collector that died), the next write raises ``BrokenPipeError`` (Python ignores SIGPIPE), and
that write may come from the publish thread's progress line, a log record or the summary: it
would end the run half-way and lose its end-of-stream messages. :func:`tolerant_stderr` puts a
wrapper in front of ``sys.stderr`` for the length of a command that drops every write once one
has failed; results keep flowing. At the end, ``sys.stderr`` is left pointing at ``os.devnull``
when the real one broke, so the interpreter's last flush cannot fail either (it would turn the
exit status into 120).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO


class TolerantStream:
    """A text stream that forwards to ``inner`` until a write or flush fails, then drops
    everything (``broken``). Safe from several threads (one lock around the inner stream)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.broken = False
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if not self.broken:
                try:
                    self.inner.write(text)
                except (OSError, ValueError):  # EPIPE, EBADF, or a closed file
                    self.broken = True
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if not self.broken:
                try:
                    self.inner.flush()
                except (OSError, ValueError):
                    self.broken = True

    def isatty(self) -> bool:
        try:
            return not self.broken and self.inner.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, errors, ...
        return getattr(self.inner, name)


@contextlib.contextmanager
def tolerant_stderr() -> Iterator[TolerantStream]:
    """``sys.stderr`` is a :class:`TolerantStream` while active (log handlers made meanwhile
    write through it too)."""
    inner = sys.stderr
    wrapper = TolerantStream(inner)
    sys.stderr = wrapper  # a TextIO in every way that is used
    try:
        yield wrapper
    finally:
        after: TextIO = inner
        if wrapper.broken:
            after = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115  (lives to the end)
            with contextlib.suppress(OSError, ValueError):
                inner.flush()
        sys.stderr = after
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is wrapper:
                handler.setStream(after)
