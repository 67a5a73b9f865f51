"""The live view's HTTP server: one asyncio event loop on one thread, every connection bounded.

Why asyncio from the standard library (docs/live_view.md, "Design"): the view needs a handful of
GET routes, two long-lived streams (MJPEG images, Server-Sent Events) and strict caps on what
a misbehaving client may hold. One event loop serves any number of viewers on one thread with
no dependency; ``http.server`` would spend a thread per connection (a slowloris client or a
stalled viewer then holds a thread), and aiohttp or a WebSocket stack would add a large
dependency for what is here ~300 lines. Only the request head is parsed (GET and HEAD, no
bodies); header lines go through the standard library's ``http.client.parse_headers``.

Threads: the sink's own thread hands results over with :meth:`ViewServer.publish_many` (into
an inbox: the first batch after a quiet spell wakes the loop, which then drains the inbox every
``EVENT_INTERVAL`` for as long as messages keep coming; a message's JSON is made on the loop
when the first event client reads it, so none is made while nobody reads) and :meth:`ViewServer.publish_jpeg`
(``loop.call_soon_threadsafe``); neither ever blocks on a client. Everything else happens on
the loop's thread. What a client can cost is capped
(:class:`ServerLimits`):

* connections: at most ``max_clients`` at once; more are answered 503 and closed;
* the request head: at most ``max_head_bytes`` (431 beyond) within ``head_timeout`` seconds
  (408 beyond: a slowloris client is gone after that);
* bad requests get an error and are closed: 400 malformed, 401 wrong or missing token (every
  route but the page's own three files, which hold no data), 404 unknown path or stream, 405
  other methods;
* memory per connection: what its socket's send buffer holds (``sndbuf``) plus, in the loop,
  the rest of one image or one batch of events (at most ``batch_bytes``): nothing more is
  written to a connection until the socket took the previous write whole; one that makes no
  progress for ``stall_close`` seconds is closed;
* results kept for the event stream: a ring of the last ``ring_messages`` messages and at most
  ``ring_bytes`` bytes (their JSON once made; before, the publisher's estimate of what the kept
  message holds), shared by every client (a client that falls further behind is told how
  many it missed, which are counted, and goes on from the oldest kept).

Images: viewers of one stream share one JPEG per frame. The sink encodes only while some viewer
is waiting for a newer image (:meth:`ViewServer.wants_image`): a viewer still busy sending the
previous one, or stalled, asks for nothing and costs no encoding; the frames it missed are
counted as its losses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http.client
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

# How often, while results flow, the loop takes in what the sink's thread handed over and wakes
# the event clients to send it in one write (seconds): a result reaches a page at most this
# much later. At 60 frames/s the loop then wakes 25 times a second instead of once per message
# and once per batch (85), and each wake-up takes the interpreter lock from the pipeline's
# threads. (A page redraws at most 60 times a second anyway.)
EVENT_INTERVAL = 0.04
# How often, while results flow, the event clients are woken to send what came meanwhile in
# one write (seconds; at once when results stop coming): each wake-up of a client is a send and
# a wake-up of the reader, 20 pages at 25 a second were a third of the server's time. A chart
# redrawn ten times a second looks as live; a service that needs each result sooner
# subscribes over ZeroMQ.
EVENTS_EVERY = 0.1
STATS_STREAM = "_stats"  # the ring's stream key of stats messages (stream ids never start with _)
BOUNDARY = b"norface-frame"
_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
# The page and its files: same origin only, no inline script, no referrer (a token in the URL
# must not leak to other sites). Inline style attributes are allowed: the bars are sized with them.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class ServerLimits:
    """What one client, and all of them together, may hold (see the module doc)."""

    max_clients: int = 64
    max_head_bytes: int = 8192
    head_timeout: float = 5.0
    sndbuf: int = 64 * 1024
    stall_close: float = 30.0
    ring_messages: int = 2048
    ring_bytes: int = 16 * 2**20
    batch_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"limits.{name}: expected a number > 0, got {value!r}")


class HttpError(Exception):
    """Answer the request with ``status`` and close (the message is the body)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(slots=True)
class Published:
    """One message handed to the server: its stream, kind and number, its JSON (or how to
    make it, with ``size`` the bytes to count for it until then) and the counters ``/health``
    shows beside the stream's state (frames and end-of-stream messages)."""

    stream_id: str
    kind: str
    seq: int | None
    data: bytes | Callable[[], bytes]
    size: int | None = None
    dropped_frames: int | None = None
    skipped_frames: int | None = None
    lost_frames: int | None = None
    frame_index: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) and not (isinstance(self.size, int) and self.size > 0):
            raise ValueError(f"size: expected the estimated bytes (> 0) of a message whose JSON "
                             f"is made later, got {self.size!r}")


@dataclass(slots=True)
class _Entry:
    n: int
    stream_id: str
    kind: str
    data: bytes | Callable[[], bytes]
    size: int  # bytes counted for it: len(data) once made, the publisher's estimate before


class MessageRing:
    """The last messages, numbered from 1 in publish order (the events' ids), bounded by count
    and by bytes; each one's JSON is made on first read (:meth:`json`). Loop thread only."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._slots: list[_Entry | None] = [None] * max_messages
        self.first = 1  # oldest number kept
        self.last = 0  # newest number (0: none yet)
        self.bytes = 0
        self.serialised = 0  # messages whose JSON was made here

    def append(self, stream_id: str, kind: str, data: bytes | Callable[[], bytes],
               size: int | None = None) -> int:
        """Keep one message: its JSON, or a function making it and ``size``, the bytes to
        count for it until then."""
        if isinstance(data, bytes):
            size = len(data)
        elif size is None:
            raise ValueError("size: required when the JSON is made later")
        n = self.last + 1
        i = n % self.max_messages
        old = self._slots[i]
        if old is not None:
            self.bytes -= old.size
            self.first = max(self.first, old.n + 1)
        self._slots[i] = _Entry(n, stream_id, kind, data, size)
        self.last = n
        self.bytes += size
        while self.bytes > self.max_bytes and self.first < self.last:
            j = self.first % self.max_messages
            gone = self._slots[j]
            if gone is not None:
                self.bytes -= gone.size
                self._slots[j] = None
            self.first += 1
        return n

    def get(self, n: int) -> _Entry | None:
        if not self.first <= n <= self.last:
            return None
        e = self._slots[n % self.max_messages]
        return e if e is not None and e.n == n else None

    def json(self, e: _Entry) -> bytes:
        """The entry's JSON, made now if nobody read it before (then counted at its size)."""
        if isinstance(e.data, bytes):
            return e.data
        data = e.data()
        e.data = data
        self.bytes += len(data) - e.size
        e.size = len(data)
        self.serialised += 1
        return data


@dataclass
class _Stream:
    """What the loop knows of one stream."""

    stream_id: str
    frames: int = 0
    last_seq: int = -1
    frame_index: int = -1
    dropped_frames: int = 0
    skipped_frames: int = 0
    lost_frames: int = 0
    ended: bool = False
    error: str | None = None
    jpeg: bytes | None = None
    jpeg_no: int = 0  # images encoded so far
    jpeg_seq: int = -1
    jpeg_frame: int = -1
    waiting: set[_Waiter] = field(default_factory=set)  # viewers waiting for a new image
    viewers: set[_Viewer] = field(default_factory=set)


@dataclass(eq=False)
class _Viewer:
    """One MJPEG connection: what it was sent and what it missed while busy."""

    stream_id: str
    busy: bool = False
    sent: int = 0
    missed: int = 0


@dataclass
class _Counters:
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # status -> count
    viewer_frames: int = 0
    viewer_missed: int = 0
    events_sent: int = 0
    events_missed: int = 0
    stalled_closed: int = 0


class ViewServer:
    """Serves the live view on ``host:port`` (``port`` 0: a free one) from its own thread.

    ``token``: when set, every request must carry it (``?token=`` or ``Authorization: Bearer``).
    ``files``: the page's files by path (``/`` is the page), served from memory.
    ``info``: a function returning the page's configuration (``/api/info``), and ``health`` one
    returning the pipeline's figures merged into ``/health``; both are called on the loop's
    thread and must be thread-safe.
    """

    def __init__(self, host: str, port: int, *, token: str | None = None,
                 limits: ServerLimits | None = None, files: Mapping[str, tuple[str, bytes]],
                 info: Callable[[], dict[str, Any]],
                 health: Callable[[], dict[str, Any]] | None = None) -> None:
        self.host = host
        self.limits = limits or ServerLimits()
        self._token = token.encode() if token else None
        self._files = dict(files)
        self._info = info
        self._health = health
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ring = MessageRing(self.limits.ring_messages, self.limits.ring_bytes)
        self._streams: dict[str, _Stream] = {}
        self._listeners: set[_Waiter] = set()  # event clients waiting for messages
        # Messages from the sink's thread, waiting for the loop (_drain): the lock is held only
        # to append or swap the list. _drain_due: the loop will drain without being woken (a
        # wake-up or a timer is on its way).
        self._inbox: list[Published] = []
        self._inbox_lock = threading.Lock()
        self._drain_due = False
        self._told = 0  # the newest message the event clients were woken for, and when
        self._told_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._demand: dict[str, bool] = {}  # stream -> a viewer waits for a newer image
        self._stopping = False
        self.counters = _Counters()
        self.connections = 0
        self.port = 0
        self._bind(port)

    # ------------------------------------------------------------------ any thread
    def _bind(self, port: int) -> None:
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._client, self.host, port, limit=self.limits.max_head_bytes,
                reuse_address=True, backlog=128))
        except OSError as exc:
            self._loop.close()
            raise RuntimeError(f"--http: cannot listen on {self.host}:{port}: {exc}") from exc
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the live view server is already running")
        self._thread = threading.Thread(target=self._loop.run_forever, name="norface-http",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close every connection (clients get what was already queued for up to half of
        ``timeout``), stop the loop and join its thread."""
        if self._loop.is_closed():
            return
        if self._thread is None:
            self._loop.run_until_complete(self._shutdown(0.0))
            self._loop.close()
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(timeout / 2), self._loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the live view's server thread did not stop within %.1f s", timeout)
            return
        self._loop.close()

    def publish_many(self, batch: list[Published]) -> None:
        """Hand messages to the loop, in order; never blocks. Only the first batch after a
        quiet spell wakes the loop; the rest are taken in by its next drain (at most
        ``EVENT_INTERVAL`` later)."""
        if not batch:
            return
        with self._inbox_lock:
            self._inbox.extend(batch)
            if self._drain_due:
                return
            self._drain_due = True
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self._loop.call_soon_threadsafe(self._drain)

    def publish_jpeg(self, stream_id: str, seq: int, frame_index: int, jpeg: bytes) -> None:
        """Hand one encoded image to the loop; never blocks."""
        self._demand[stream_id] = False  # a newer image is on its way
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_jpeg, stream_id, seq, frame_index, jpeg)

    def wants_image(self, stream_id: str) -> bool:
        """True while a viewer of ``stream_id`` waits for an image newer than the last one."""
        return self._demand.get(stream_id, False)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"connections": self.connections,
                "viewers": sum(len(s.viewers) for s in list(self._streams.values())),
                "viewer_frames": c.viewer_frames, "viewer_missed": c.viewer_missed,
                "events_sent": c.events_sent, "events_missed": c.events_missed,
                "rejected": sum(c.rejected.values()), "stalled_closed": c.stalled_closed}

    # ------------------------------------------------------------------ loop thread: results
    def _stream(self, stream_id: str) -> _Stream:
        st = self._streams.get(stream_id)
        if st is None:
            st = self._streams[stream_id] = _Stream(stream_id)
        return st

    def known_stream(self, stream_id: str) -> bool:
        if stream_id in self._streams:
            return True
        return stream_id in (self._info().get("streams") or [])

    def _drain(self) -> None:
        """Take in what the sink's thread handed over; while messages keep coming, drain
        again ``EVENT_INTERVAL`` later (no wake-up per message), and once none came, let the
        next :meth:`publish_many` wake the loop. Event clients are woken every
        ``EVENTS_EVERY`` while messages come, and at once when they stop."""
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
            self._drain_due = bool(batch) and not self._stopping
        for item in batch:
            self._on_message(item)
        now = time.monotonic()
        if self._ring.last > self._told and (not batch or self._stopping
                                             or now - self._told_at >= EVENTS_EVERY):
            _wake(self._listeners)
            self._told, self._told_at = self._ring.last, now
        if self._drain_due:
            self._loop.call_later(EVENT_INTERVAL, self._drain)

    def _on_message(self, p: Published) -> None:
        self._ring.append(p.stream_id, p.kind, p.data, p.size)
        if p.kind in ("frame", "eos"):
            st = self._stream(p.stream_id)
            if p.seq is not None:
                st.last_seq = p.seq
            if p.dropped_frames is not None:
                st.dropped_frames = int(p.dropped_frames)
            if p.skipped_frames is not None:
                st.skipped_frames = int(p.skipped_frames)
            if p.lost_frames is not None:
                st.lost_frames = int(p.lost_frames)
            if p.kind == "frame":
                st.frames += 1
                if p.frame_index is not None:
                    st.frame_index = int(p.frame_index)
                for v in st.viewers:  # a frame that came while a viewer was still busy
                    if v.busy:
                        v.missed += 1
                        self.counters.viewer_missed += 1
            else:
                st.ended = True
                st.error = p.error
                _wake(st.waiting)  # viewers waiting for an image that will not come

    def _on_jpeg(self, stream_id: str, seq: int, frame_index: int, jpeg: bytes) -> None:
        st = self._stream(stream_id)
        st.jpeg, st.jpeg_seq, st.jpeg_frame = jpeg, seq, frame_index
        st.jpeg_no += 1
        _wake(st.waiting)

    # ------------------------------------------------------------------ loop thread: clients
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.sndbuf)
        # Paused as soon as anything waits in the loop: drain() then returns only once the
        # socket took it all, so a connection never holds more than one write.
        writer.transport.set_write_buffer_limits(high=0, low=0)
        self.connections += 1
        try:
            if self.connections > self.limits.max_clients or self._stopping:
                raise HttpError(503, f"too many connections (at most "
                                     f"{self.limits.max_clients}); try again later",
                                {"Retry-After": "5"})
            method, path, query, headers = await self._read_head(reader)
            self.counters.requests += 1
            await self._route(method, path, query, headers, reader, writer)
        except HttpError as err:
            self.counters.rejected[str(err.status)] = \
                self.counters.rejected.get(str(err.status), 0) + 1
            await self._error(writer, reader, err)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # shutdown
        except Exception:  # a bug here must cost one connection, not the server
            log.exception("live view: request failed")
        finally:
            self.connections -= 1
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # stalled: what it did not take is dropped
            else:
                writer.transport.close()
            if task is not None:
                self._tasks.discard(task)

    async def _read_head(self, reader: asyncio.StreamReader
                         ) -> tuple[str, str, dict[str, list[str]], http.client.HTTPMessage]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.limits.head_timeout)
        except TimeoutError:
            raise HttpError(408, f"request head not received within "
                                 f"{self.limits.head_timeout:g} s") from None
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head larger than {self.limits.max_head_bytes} "
                                 "bytes") from None
        except ValueError:  # the separator was found beyond the limit
            raise HttpError(431, f"request head larger than {self.limits.max_head_bytes} "
                                 "bytes") from None
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
        method, target, _ = parts
        try:
            headers = http.client.parse_headers(io.BytesIO(rest))
        except (http.client.HTTPException, ValueError) as exc:
            raise HttpError(400, f"malformed headers: {exc}") from None
        url = urlsplit(target)
        if not url.path.startswith("/"):
            raise HttpError(400, "the request target must be a path starting with '/'")
        return method, unquote(url.path), parse_qs(url.query), headers

    def _check_token(self, query: dict[str, list[str]], headers: http.client.HTTPMessage) -> None:
        if self._token is None:
            return
        given = (query.get("token") or [""])[0]
        auth = headers.get("Authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self._token):
            raise HttpError(401, "a valid token is needed: open the page as /?token=TOKEN "
                                 "(or send Authorization: Bearer TOKEN)",
                            {"WWW-Authenticate": 'Bearer realm="norface-rt"'})

    async def _route(self, method: str, path: str, query: dict[str, list[str]],
                     headers: http.client.HTTPMessage, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if method not in ("GET", "HEAD"):
            raise HttpError(405, f"method {method[:16]!r} not allowed (GET or HEAD)",
                            {"Allow": "GET, HEAD"})
        head_only = method == "HEAD"
        if path not in self._files:  # the page's code is public; the data needs the token
            self._check_token(query, headers)
        if path in self._files:
            ctype, body = self._files[path]
            extra = _PAGE_HEADERS if ctype.startswith("text/html") else {}
            await self._respond(writer, 200, ctype, body, extra, head_only=head_only)
        elif path == "/api/info":
            await self._json(writer, self._info(), head_only)
        elif path == "/health":
            await self._json(writer, self.health(), head_only)
        elif path == "/events":
            if head_only:
                await self._respond(writer, 200, "text/event-stream", b"", head_only=True)
                return
            await self._events(reader, writer, query, headers)
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            sid = path[len("/stream/"):-len(".mjpg")]
            if not self.known_stream(sid):
                raise HttpError(404, f"no stream {sid[:100]!r}")
            if head_only:
                await self._respond(writer, 200, _MJPEG_TYPE, b"", head_only=True)
                return
            await self._mjpeg(reader, writer, sid)
        elif path.startswith("/frame/") and path.endswith(".jpg"):
            sid = path[len("/frame/"):-len(".jpg")]
            if not self.known_stream(sid):
                raise HttpError(404, f"no stream {sid[:100]!r}")
            await self._snapshot(writer, sid, head_only)
        else:
            raise HttpError(404, f"no such page: {path[:200]!r}")

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _head(status: int, ctype: str, length: int | None,
              extra: Mapping[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Type: {ctype}",
                 "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                 "Connection: close"]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _respond(self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes,
                       extra: Mapping[str, str] | None = None, *, head_only: bool = False
                       ) -> None:
        writer.write(self._head(status, ctype, len(body), extra))
        if not head_only:
            writer.write(body)
        await self._flush(writer)

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Wait until what is queued has gone to the socket, at most ``stall_close`` seconds
        (a client that does not read its answer is cut off)."""
        if writer.transport.is_closing():
            raise ConnectionError("client gone")
        if not writer.transport.get_write_buffer_size():
            return  # the socket took it all (the usual case): no wait, no task
        try:
            await asyncio.wait_for(writer.drain(), self.limits.stall_close)
        except TimeoutError:
            self.counters.stalled_closed += 1
            raise ConnectionError("client stalled") from None

    async def _json(self, writer: asyncio.StreamWriter, obj: Any, head_only: bool) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        await self._respond(writer, 200, "application/json", body, head_only=head_only)

    async def _error(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                     err: HttpError) -> None:
        """Answer ``err`` and half-close; read (and discard) what the client still sends for a
        moment, so that closing does not reset the connection before it read the answer."""
        body = json.dumps({"error": str(err), "status": err.status}).encode()
        with contextlib.suppress(Exception):
            writer.write(self._head(err.status, "application/json", len(body), err.headers))
            writer.write(body)
            await asyncio.wait_for(writer.drain(), 1.0)
            if writer.can_write_eof():
                writer.write_eof()
            deadline = time.monotonic() + 0.5
            got = 0
            while got < 65536 and time.monotonic() < deadline:
                chunk = await asyncio.wait_for(reader.read(8192),
                                               max(0.01, deadline - time.monotonic()))
                if not chunk:
                    break
                got += len(chunk)

    # ------------------------------------------------------------------ streams
    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      query: dict[str, list[str]], headers: http.client.HTTPMessage) -> None:
        """Server-Sent Events: every message in publish order, ``id`` its number in the ring
        (a reconnecting browser resumes after ``Last-Event-ID``); ``?stream=ID`` (repeatable)
        keeps those streams (stats messages always pass); ``?from=oldest`` starts with every
        message still kept (the page fills its charts with them)."""
        wanted = set(query.get("stream", []))
        last = headers.get("Last-Event-ID") or (query.get("after") or [""])[0]
        if last:
            try:
                cursor = int(last)
            except ValueError:
                raise HttpError(400, f"Last-Event-ID / after: expected an integer, got "
                                     f"{last[:40]!r}") from None
        elif (query.get("from") or [""])[0] == "oldest":
            cursor = self._ring.first - 1
        else:
            cursor = self._ring.last
        writer.write(self._head(200, "text/event-stream", None))
        writer.write(b"retry: 2000\n\n")
        left = _Waiter(reader)
        try:
            while True:
                await self._flush(writer)
                if self._ring.last <= cursor:
                    if self._stopping or not await left.wait(self._listeners, 15.0):
                        return
                    if self._ring.last <= cursor:
                        writer.write(b": keep-alive\n\n")  # proxies drop silent connections
                    continue
                if cursor + 1 < self._ring.first:  # fell behind the ring: say so, count it
                    gap = self._ring.first - cursor - 1
                    self.counters.events_missed += gap
                    writer.write(b"event: gap\ndata: " + json.dumps(
                        {"missed": gap, "from": cursor + 1, "to": self._ring.first - 1}).encode()
                        + b"\n\n")
                    cursor = self._ring.first - 1
                batch: list[bytes] = []
                size = 0
                while cursor < self._ring.last and size < self.limits.batch_bytes:
                    cursor += 1
                    e = self._ring.get(cursor)
                    if e is None or (wanted and e.stream_id not in wanted
                                     and e.stream_id != STATS_STREAM):
                        continue
                    chunk = b"id: %d\nevent: %s\ndata: %s\n\n" % (e.n, e.kind.encode(),
                                                                    self._ring.json(e))
                    batch.append(chunk)
                    size += len(chunk)
                if batch:
                    writer.write(b"".join(batch))
                    self.counters.events_sent += len(batch)
        finally:
            left.cancel()

    async def _mjpeg(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     stream_id: str) -> None:
        """multipart/x-mixed-replace: each part one JPEG, sent as soon as a newer one exists
        than the last this viewer got (every ``<img>`` shows it; so do VLC and ffplay)."""
        st = self._stream(stream_id)
        viewer = _Viewer(stream_id)
        st.viewers.add(viewer)
        last_no = 0
        left = _Waiter(reader)
        try:
            writer.write(self._head(200, _MJPEG_TYPE, None))
            writer.write(b"--" + BOUNDARY + b"\r\n")
            while not self._stopping:
                if st.jpeg_no <= last_no or st.jpeg is None:
                    self._demand[stream_id] = True
                    if not await left.wait(st.waiting, 15.0):
                        return
                    continue
                last_no = st.jpeg_no
                jpeg = st.jpeg
                # One write (one send) per image: the part's head, the image, and the boundary
                # right after it (a browser shows a part once the next boundary arrives, so
                # this one is shown now, not one frame late).
                writer.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n"
                             b"X-Frame-Index: %d\r\nX-Seq: %d\r\n\r\n%b\r\n--%b\r\n"
                             % (len(jpeg), st.jpeg_frame, st.jpeg_seq, jpeg, BOUNDARY))
                viewer.sent += 1
                self.counters.viewer_frames += 1
                viewer.busy = True
                try:
                    await self._flush(writer)
                finally:
                    viewer.busy = False
        finally:
            st.viewers.discard(viewer)
            left.cancel()

    async def _snapshot(self, writer: asyncio.StreamWriter, stream_id: str, head_only: bool
                        ) -> None:
        """The newest image of a stream as one JPEG (asks for one and waits up to 2 s when
        none has been made yet)."""
        st = self._stream(stream_id)
        if st.jpeg is None:
            self._demand[stream_id] = True
            await _Waiter(None).wait(st.waiting, 2.0)
        if st.jpeg is None:
            raise HttpError(404, f"stream {stream_id[:100]!r} has no image yet")
        await self._respond(writer, 200, "image/jpeg", st.jpeg,
                            {"X-Frame-Index": str(st.jpeg_frame), "X-Seq": str(st.jpeg_seq)},
                            head_only=head_only)

    # ------------------------------------------------------------------ health, shutdown
    def health(self) -> dict[str, Any]:
        """Stream states and drop counters (the pipeline's, where known, and the view's own)."""
        pipeline = self._health() if self._health is not None else {}
        streams: dict[str, Any] = {}
        sources = pipeline.get("streams") or {}
        for sid in dict.fromkeys([*sources, *self._streams]):
            src = dict(sources.get(sid) or {})
            st = self._streams.get(sid)
            raw = str(src.get("state", "ended" if st is not None and st.ended else "starting"))
            state = _SUMMARY.get(raw, raw)
            if st is not None and st.ended:
                state = "ended"
            streams[sid] = {
                "state": state, "source_state": raw,
                "frames": st.frames if st else 0,
                "frame_index": st.frame_index if st else None,
                "dropped_frames": st.dropped_frames if st else 0,
                "skipped_frames": int(src.get("skipped_frames", st.skipped_frames if st else 0)),
                "lost_frames": int(src.get("lost_frames", st.lost_frames if st else 0)),
                "reconnects": src.get("reconnects"),
                "error": (st.error if st and st.error else src.get("last_error")),
                "viewers": len(st.viewers) if st else 0,
            }
        states = {s["state"] for s in streams.values()}
        status = ("ended" if streams and states == {"ended"}
                  else "degraded" if "reconnecting" in states else "ok")
        c = self.counters
        return {"status": status, "streams": streams, "outputs": pipeline.get("sinks") or {},
                "view": {"connections": self.connections, "requests": c.requests,
                         "rejected": dict(c.rejected),
                         "images_sent": c.viewer_frames, "images_missed": c.viewer_missed,
                         "events_sent": c.events_sent, "events_missed": c.events_missed,
                         "stalled_closed": c.stalled_closed,
                         "ring": {"first": self._ring.first, "last": self._ring.last,
                                  "bytes": self._ring.bytes,
                                  "serialised": self._ring.serialised},
                         "limits": asdict(self.limits)}}

    async def _shutdown(self, grace: float) -> None:
        self._drain()  # what the sink handed over last goes out before the end
        self._stopping = True
        if self._server is not None:
            self._server.close()
        _wake(self._listeners)
        for st in self._streams.values():
            _wake(st.waiting)
        # Streams leave their loops at the next wake-up; give them a moment to send the end.
        deadline = time.monotonic() + grace
        while self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Waiter:
    """One connection's wait for news (a message, an image) without a task per wait: it joins
    a set that the publisher wakes (:func:`_wake`). It also notices a streaming client that
    went away while nothing was written to it: such a client sends nothing after its request,
    so anything readable (end of file included) ends it."""

    def __init__(self, reader: asyncio.StreamReader | None) -> None:
        self.left = False
        self._fut: asyncio.Future[None] | None = None
        self._read = asyncio.ensure_future(reader.read(1024)) if reader is not None else None
        if self._read is not None:
            self._read.add_done_callback(self._gone)

    def _gone(self, _: object) -> None:
        self.left = True
        self.wake()

    def wake(self) -> None:
        if self._fut is not None and not self._fut.done():
            self._fut.set_result(None)

    async def wait(self, group: set[_Waiter], timeout: float) -> bool:
        """Wait in ``group`` until woken (at most ``timeout`` s); False when the client left."""
        if self.left:
            return False
        loop = asyncio.get_running_loop()
        self._fut = loop.create_future()
        group.add(self)
        timer = loop.call_later(timeout, self.wake)
        try:
            await self._fut
        finally:
            timer.cancel()
            group.discard(self)
        return not self.left

    def cancel(self) -> None:
        if self._read is not None:
            self._read.cancel()


def _wake(group: set[_Waiter]) -> None:
    for w in list(group):
        w.wake()


_MJPEG_TYPE = "multipart/x-mixed-replace; boundary=" + BOUNDARY.decode()
# A source's state (norface_rt.sources.base.STATES) as the view summarises it.
_SUMMARY = {"starting": "starting", "connecting": "starting", "connected": "running",
            "reading": "running", "retrying": "reconnecting", "ended": "ended"}
