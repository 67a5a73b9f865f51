"""Live sources: RTSP cameras (with automatic reconnection) and local webcams.

Live sources use the drop-oldest queue: when analysis falls behind, the oldest frame is discarded
so results stay current, and the count travels in ``FramePacket.dropped``. Decoding uses slice
threading only: frame threading would buffer several frames inside the decoder and add latency.

Every network wait is bounded twice: PyAV's interrupt-callback timeout (``open_timeout`` for the
connection, ``read_timeout`` between packets) and FFmpeg's socket timeout (option ``timeout`` in
microseconds since libavformat 59 / FFmpeg 5, ``stimeout`` before). So ``stop()`` takes effect
within ``read_timeout`` even while a read is blocked, and at once while waiting to reconnect.

Frames the decoder flags corrupt are not delivered; they are counted in ``corrupt_frames``, and
those outside an outage (the grey frames after a reconnect belong to it) also in ``skipped`` (each
keeps its frame index).

Outages are visible in the data: when an RTSP stream comes back, the time it was away is added to
``outage_s`` and the frames a camera would have sent meanwhile (that time x the stream's frame
rate) are counted as ``lost``, their indices left unused, so ``frame_index`` jumps over the hole.
:meth:`Source.status` reports the connection ``state``, ``reconnects`` and ``last_error``.
A peer that accepts the connection and then says nothing is reported as a timeout.

``timings[Stage.DECODE]`` covers decoding and RGB conversion from the moment a packet has arrived
(plus the decode work of earlier packets that yielded no frame, e.g. corrupt ones). Waiting for the
next packet is excluded: on a live stream that wait is the camera's frame interval, not work.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from norface_rt.files import slug
from norface_rt.pyav import av
from norface_rt.sources.base import (
    DecodeClock,
    Source,
    check_optional_seconds,
    check_seconds,
)
from norface_rt.types import FramePacket, Stage

log = logging.getLogger(__name__)

RTSP_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps")
# Errors that retrying cannot fix when they happen before the first successful connection.
_FATAL_OPEN_ERRORS: tuple[type[BaseException], ...] = (
    av.error.HTTPBadRequestError, av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError,
    av.error.HTTPNotFoundError, av.error.ProtocolNotFoundError, av.error.DemuxerNotFoundError,
)


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _describe(exc: BaseException, timeout: float, elapsed: float | None = None) -> str:
    """FFmpeg's reason, or a timeout when the wait ran into it: FFmpeg reports a peer that never
    answered within the interrupt-callback timeout as "Invalid data" (or an exit), which would send
    an operator looking for a codec problem."""
    if isinstance(exc, av.error.ExitError):
        return f"timed out after {timeout:g} s"
    timed_out = elapsed is not None and elapsed >= 0.9 * timeout
    if timed_out and isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
        return (f"timed out after {timeout:g} s: the peer accepted the connection but sent no "
                "valid answer")
    if isinstance(exc, av.FFmpegError):
        return str(exc.strerror or exc)
    return f"{type(exc).__name__}: {exc}"


class _LiveSource(Source):
    """Shared decode loop of live sources."""

    def __init__(self, stream_id: str, *, queue_size: int, open_timeout: float,
                 read_timeout: float) -> None:
        super().__init__(stream_id, queue_size=queue_size, policy="drop_oldest", live=True)
        self._open_timeout = check_seconds("open_timeout", open_timeout)
        self._read_timeout = check_seconds("read_timeout", read_timeout)
        if not self._open_timeout or not self._read_timeout:
            raise ValueError(f"open_timeout and read_timeout must be > 0 (seconds), got "
                             f"{open_timeout!r} and {read_timeout!r}")
        self._corrupt = 0
        self._connected = False
        self._last_error: str | None = None
        # Outage accounting (decode thread): monotonic time of the last frame delivered before a
        # lost connection, seconds missed so far, and whether the stream is down right now.
        self._last_frame_at: float | None = None
        self._outage_since: float | None = None
        self._outage_s = 0.0
        self._frame_interval: float | None = None

    @property
    def corrupt_frames(self) -> int:
        return self._corrupt

    @property
    def connected(self) -> bool:
        """True while a connection is open and being read."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt or connection ended (None before any failure)."""
        return self._last_error

    @property
    def outage_s(self) -> float:
        """Seconds without frames because the stream was down, the current outage included."""
        current = self._outage_since
        return self._outage_s + (time.monotonic() - current if current is not None else 0.0)

    @property
    def reconnects(self) -> int:
        return 0

    def status(self) -> dict[str, Any]:
        return {**super().status(), "reconnects": self.reconnects,
                "outage_s": round(self.outage_s, 3), "last_error": self._last_error}

    def _end_fields(self) -> dict[str, Any]:
        return {"outage_s": self.outage_s, "reconnects": self.reconnects}

    def _timeouts(self) -> tuple[float, float]:
        return self._open_timeout, self._read_timeout

    def _connection_lost(self) -> None:
        """The stream stopped delivering: an outage starts at its last frame."""
        if self._outage_since is None and self._last_frame_at is not None:
            self._outage_since = self._last_frame_at

    def _account_outage(self, now: float) -> None:
        """First frame after an outage: add its length and the frames it swallowed."""
        if self._outage_since is None:
            return
        gap = max(0.0, now - self._outage_since)
        interval = self._frame_interval or 0.0
        missed = max(0.0, gap - interval)
        self._outage_s += missed
        self._outage_since = None
        lost = int(round(missed / interval)) if interval > 0 else 0
        if lost > 0:
            log.warning("source %s: %.1f s without frames (about %d frame(s) lost)",
                        self.stream_id, missed, lost)
            self._skip(lost, lost=True)

    def _read_frames(self, container: Any, what: str) -> tuple[int, str]:
        """Decode until EOF, error or stop; returns (frames queued, why it ended)."""
        if not container.streams.video:
            return 0, f"{what} has no video stream"
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        rate = stream.average_rate or stream.guessed_rate
        if rate and 1.0 <= float(rate) <= 240.0:
            self._frame_interval = 1.0 / float(rate)
        queued = 0
        clock = DecodeClock()
        self._connected = True
        self._state = "connected"
        waited_since = time.monotonic()
        try:
            for pkt in container.demux(stream):
                if self._stopping:
                    return queued, "stopped"
                clock.resume()  # the packet is here: waiting for it is not counted
                for frame in pkt.decode():
                    if frame.is_corrupt:
                        self._corrupt += 1
                        if self._outage_since is None and self._last_frame_at is not None:
                            self._skip(1)  # not part of an outage: a frame the data broke
                        continue
                    now = time.monotonic()
                    self._account_outage(now)
                    self._last_frame_at = now
                    packet = FramePacket.from_av_frame(frame, self.stream_id, self._next_index,
                                                       live=True)
                    packet.timings[Stage.DECODE] = clock.take()
                    if not self._emit(packet):
                        return queued, "stopped"
                    queued += 1
                    clock.resume()
                clock.pause()
                waited_since = time.monotonic()
        except (av.FFmpegError, OSError) as exc:
            elapsed = time.monotonic() - waited_since
            return queued, (f"read from {what} failed: "
                            f"{_describe(exc, self._timeouts()[1], elapsed)}")
        finally:
            self._connected = False
            if not self._stopping:
                self._connection_lost()
        return queued, f"{what} ended (EOF)"


class RTSPSource(_LiveSource):
    """An RTSP(S) stream over TCP that reconnects with exponential backoff.

    ``frame_index`` keeps increasing across reconnects, jumping over the frames lost meanwhile
    (``pts`` is the server's and may restart); ``reconnects`` counts successful re-connections
    after a lost stream. With ``reconnect=False`` the first failure ends the stream with
    ``EndOfStream(error=...)``; otherwise retries go on (backoff ``initial_backoff`` doubling up
    to ``max_backoff``, the last one shortened so that a final try starts ``max_reconnect_time``
    seconds after the stream was lost: it gives up when that try fails too), or until
    ``max_reconnect_tries`` attempts in a row have failed
    (None: no limit, for unattended cameras that may reboot). An HTTP-style refusal
    (401/403/404, unknown protocol) before the first successful connection is final.
    """

    def __init__(self, url: str, stream_id: str | None = None, queue_size: int = 2, *,
                 open_timeout: float = 5.0, read_timeout: float = 5.0, reconnect: bool = True,
                 max_backoff: float = 8.0, initial_backoff: float = 0.25,
                 max_reconnect_time: float | None = None,
                 max_reconnect_tries: int | None = None) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme.lower() not in RTSP_SCHEMES or not parts.hostname:
            raise ValueError(f"url must be rtsp://host[:port]/path or rtsps://..., got {url!r}")
        self._url = url
        self._safe_url = redact_url(url)
        super().__init__(stream_id or default_stream_id_for_url(url), queue_size=queue_size,
                         open_timeout=open_timeout, read_timeout=read_timeout)
        self._reconnect = bool(reconnect)
        initial = check_seconds("initial_backoff", initial_backoff)
        maximum = check_seconds("max_backoff", max_backoff)
        if maximum < initial:
            raise ValueError(f"max_backoff must be >= initial_backoff ({initial:g}), "
                             f"got {max_backoff!r}")
        self._initial_backoff, self._max_backoff = initial, maximum
        self._max_reconnect_time = check_optional_seconds("max_reconnect_time",
                                                          max_reconnect_time)
        if max_reconnect_tries is not None and (isinstance(max_reconnect_tries, bool)
                                                or not isinstance(max_reconnect_tries, int)
                                                or max_reconnect_tries < 1):
            raise ValueError(f"max_reconnect_tries must be an integer >= 1 or None, "
                             f"got {max_reconnect_tries!r}")
        self._max_reconnect_tries = max_reconnect_tries
        self._reconnects = 0

    @property
    def url(self) -> str:
        """The URL with any password redacted."""
        return self._safe_url

    @property
    def reconnects(self) -> int:
        return self._reconnects

    def ffmpeg_options(self) -> dict[str, str]:
        """Demuxer options: TCP transport, socket timeout in microseconds, no input buffering."""
        major = av.library_versions["libavformat"][0]
        timeout_key = "timeout" if major >= 59 else "stimeout"
        return {"rtsp_transport": "tcp", timeout_key: str(int(self._timeouts()[1] * 1e6)),
                "fflags": "nobuffer"}

    def _produce(self) -> str | None:
        backoff = self._initial_backoff
        lost_since: float | None = None  # monotonic time of the first failure since last frames
        failures = 0  # attempts in a row that brought no frame
        ever_connected = False
        while not self._stopping:
            self._state = "connecting" if lost_since is None else "retrying"
            t_open = time.monotonic()
            try:
                container = av.open(self._url, mode="r", options=self.ffmpeg_options(),
                                    timeout=self._timeouts())
            except (av.FFmpegError, OSError) as exc:
                reason = _describe(exc, self._timeouts()[0], time.monotonic() - t_open)
                self._last_error = (f"cannot open {self._safe_url}: "
                                    f"{reason.replace(self._url, self._safe_url)}")
                if isinstance(exc, _FATAL_OPEN_ERRORS) and not ever_connected:
                    return self._last_error
                got = 0
            else:
                if ever_connected:
                    self._reconnects += 1
                    log.info("source %s: reconnected to %s", self.stream_id, self._safe_url)
                ever_connected = True
                try:
                    got, why = self._read_frames(container, self._safe_url)
                finally:
                    container.close()
                if self._stopping:
                    return None
                if got:
                    backoff = self._initial_backoff
                    lost_since = None
                    failures = 0
                self._last_error = why
            if self._stopping:
                return None
            if not self._reconnect:
                return self._last_error
            self._state = "retrying"
            failures += 0 if got else 1
            now = time.monotonic()
            lost_since = now if lost_since is None else lost_since
            wait = backoff
            if self._max_reconnect_time is not None:
                left = lost_since + self._max_reconnect_time - now
                if left <= 0:  # the last try was at the limit (or after it)
                    return (f"gave up reconnecting to {self._safe_url} after "
                            f"{now - lost_since:.1f} s without frames: {self._last_error}")
                wait = min(backoff, left)  # a final try at the limit, never one beyond it
            if self._max_reconnect_tries is not None and failures >= self._max_reconnect_tries:
                return (f"gave up reconnecting to {self._safe_url} after {failures} failed "
                        f"attempt(s) in {now - lost_since:.1f} s: {self._last_error}")
            log.warning("source %s: %s; retrying in %.2f s", self.stream_id, self._last_error,
                        wait)
            if self._wait(wait):
                return None
            backoff = min(backoff * 2.0, self._max_backoff)
        return None


def default_stream_id_for_url(url: str) -> str:
    """``rtsp://user:pw@10.0.0.5:554/live/main`` -> ``10.0.0.5-live-main``."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    return slug("-".join([parts.hostname or "rtsp", *segments]))


def _default_webcam_format() -> str:
    if sys.platform.startswith("linux"):
        return "v4l2"
    if sys.platform == "darwin":
        return "avfoundation"
    if sys.platform == "win32":
        return "dshow"
    raise ValueError(f"no default webcam input format for platform {sys.platform!r}; "
                     "pass input_format_name")


class WebcamSource(_LiveSource):
    """A local camera through FFmpeg's capture device (``v4l2`` on Linux).

    ``device`` is a path (``/dev/video0``), or an index (``0`` -> ``/dev/video0`` on Linux, the
    AVFoundation index on macOS), or a DirectShow name (``video=...``) on Windows. A Linux device
    node that does not exist raises ``FileNotFoundError`` at construction, listing the ones that
    do; a device that exists but cannot be opened or read ends the stream with
    ``EndOfStream(error=...)`` naming the device and FFmpeg's reason. No reconnection: a webcam
    that disappears is unplugged, not rebooting.
    """

    def __init__(self, device: str | int = "/dev/video0", stream_id: str | None = None,
                 queue_size: int = 2, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, pixel_format: str | None = None,
                 input_format_name: str | None = None, open_timeout: float = 5.0,
                 read_timeout: float = 5.0) -> None:
        fmt = input_format_name or _default_webcam_format()
        if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
            device = f"/dev/video{int(device)}" if fmt == "v4l2" else str(int(device))
        if not isinstance(device, str) or not device:
            raise ValueError(f"device must be a path, an index or a device name, got {device!r}")
        self._device = device
        self._format = fmt
        for name, value in (("width", width), ("height", height)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if (width is None) != (height is None):
            raise ValueError(f"width and height must be given together, got width={width!r}, "
                             f"height={height!r}")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                                or not fps > 0):
            raise ValueError(f"fps must be a number > 0 or None, got {fps!r}")
        self._options: dict[str, str] = {}
        if width is not None:
            self._options["video_size"] = f"{width}x{height}"
        if fps is not None:
            self._options["framerate"] = f"{fps:g}"
        if pixel_format is not None:
            self._options["input_format" if fmt == "v4l2" else "pixel_format"] = pixel_format
        super().__init__(stream_id or slug(Path(device).name if fmt == "v4l2" else
                                           f"webcam{device}"),
                         queue_size=queue_size, open_timeout=open_timeout,
                         read_timeout=read_timeout)
        if fmt == "v4l2" and not os.path.exists(device):
            present = ", ".join(sorted(str(p) for p in Path("/dev").glob("video*")))
            raise FileNotFoundError(f"webcam device not found: {device} "
                                    f"(present: {present or 'no /dev/video* devices'})")

    @property
    def device(self) -> str:
        return self._device

    def _produce(self) -> str | None:
        self._state = "connecting"
        t_open = time.monotonic()
        try:
            container = av.open(self._device, mode="r", format=self._format,
                                options=self._options, timeout=self._timeouts())
        except (av.FFmpegError, OSError) as exc:
            self._last_error = (f"cannot open webcam {self._device} ({self._format}): "
                                f"{_describe(exc, self._timeouts()[0], time.monotonic() - t_open)}")
            return self._last_error
        try:
            _, why = self._read_frames(container, f"webcam {self._device}")
        finally:
            container.close()
        if self._stopping or why == "stopped":
            return None
        self._last_error = why
        return why

