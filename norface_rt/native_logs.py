"""Silencing the native log lines of MediaPipe and TensorFlow Lite (unless ``--verbose``).

MediaPipe's C++ graphs and TFLite's LiteRT runtime write INFO/WARNING lines straight to file
descriptor 2 (``INFO: Created TensorFlow Lite XNNPACK delegate``, ``W0000 ... Feedback manager
requires a model with a single signature``, ``WARNING: Logging before InitGoogle()``), from their
own threads, at graph creation, first inference and teardown. None of the usual switches reach
them: ``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL`` and absl's ``ABSL_MIN_LOG_LEVEL`` were tried
with MediaPipe 0.10 / LiteRT and change nothing, because the lines are printed before any flag
parsing (glog "before InitGoogle") or by TFLite's minimal logger.

So the filter works at the descriptor: fd 2 is pointed at a pipe whose reader thread drops lines
in those formats (info and warning levels only) and passes everything else through unchanged,
including native errors (``E0000``) and fatal checks (``F0000``). Python's own ``sys.stderr``
(log records, the progress bar, error messages) writes to a duplicate of the real stderr and never
goes through the filter. The original descriptor is restored at the end. A native crash can lose
the last lines still in the pipe.

The CLI filters for a whole command (``--verbose`` turns it off); the Python API's ``Analyzer``
while it works (its calls, its iterations, its close), through :func:`shared_filter`. File
descriptor 2 belongs to the process, so this module keeps the one record of who is filtering it
(:class:`_Shared`): the first user installs the filter, the last one restores the descriptor, and
analyzers in several threads never undo each other's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager

# glog/absl ("I0000 00:00:1796... 12345 file.cc:12] ...", W likewise), TFLite's minimal logger
# ("INFO: ...") and glog's notice about logging before initialisation.
NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]*\] |INFO: |"
    rb"WARNING: (?:Logging before InitGoogle\(\)|All log messages before absl::InitializeLog\(\)))")


@contextlib.contextmanager
def quiet_native_logs(enabled: bool = True) -> Iterator[None]:
    """While active, native INFO/WARNING log lines on fd 2 are dropped (see the module doc);
    does nothing when ``enabled`` is False or stderr is not a real file descriptor."""
    if not enabled:
        yield
        return
    fd = 2  # where native code writes, whatever Python's sys.stderr is
    try:
        os.fstat(fd)
        sys.stderr.flush()
    except (OSError, ValueError):
        yield
        return
    try:
        python_on_fd = sys.stderr.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        python_on_fd = False
    real = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    os.close(write_end)

    def relay() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if not NATIVE_NOISE.match(line):
                    with contextlib.suppress(OSError):
                        os.write(real, line)

    thread = threading.Thread(target=relay, name="native-log-filter", daemon=True)
    thread.start()
    old_stderr = sys.stderr
    py_stderr = None
    if python_on_fd:  # Python's own lines go straight to the real stderr, never filtered
        py_stderr = open(os.dup(real), "w", buffering=1,  # noqa: SIM115 (closed below)
                         encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                         errors="backslashreplace")
        sys.stderr = py_stderr
    try:
        yield
    finally:
        if py_stderr is not None:
            with contextlib.suppress(Exception):
                py_stderr.flush()
            sys.stderr = old_stderr
            # Log handlers created meanwhile (setup_logging) write to the stream about to
            # close: point them back at the real stderr, so a late record is not lost.
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is py_stderr:
                    handler.setStream(old_stderr)
        os.dup2(real, fd)  # the pipe's last writer is gone: the relay reads to the end and stops
        thread.join(timeout=2.0)
        if py_stderr is not None:
            with contextlib.suppress(OSError, ValueError):  # (its reader may be gone: EPIPE)
                py_stderr.close()
        os.close(real)


class _Shared:
    """Who is filtering fd 2 now: a count and the active filter (the descriptor is the
    process's, so its filter is too); :func:`shared_filter` is its only user."""

    lock = threading.Lock()
    users = 0
    active: AbstractContextManager[None] | None = None


@contextlib.contextmanager
def shared_filter(enabled: bool = True) -> Iterator[None]:
    """:func:`quiet_native_logs` for code that may run in several threads at once (the Python
    API): nested and concurrent uses share one filter, installed by the first and removed by the
    last."""
    if not enabled:
        yield
        return
    with _Shared.lock:
        if _Shared.users == 0:
            filt = quiet_native_logs()
            filt.__enter__()
            _Shared.active = filt
        _Shared.users += 1
    try:
        yield
    finally:
        with _Shared.lock:
            _Shared.users -= 1
            if _Shared.users == 0 and _Shared.active is not None:
                active, _Shared.active = _Shared.active, None
                active.__exit__(None, None, None)
