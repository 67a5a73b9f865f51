"""NATS JetStream sink: a durable, replayable results feed (``--nats URL --nats-stream NAME``).

ZeroMQ PUB is fire-and-forget: a subscriber that is away misses messages. JetStream stores every
message in a stream on the server (file storage), acknowledges each one, and lets any consumer
replay from a sequence number, so results survive a consumer's or the server's restart.

* Subject per stream: ``<prefix>.<stream id>`` (stats: ``<prefix>._stats``); characters a NATS
  subject token cannot hold are written as ``~XX`` (hex of each UTF-8 byte), see
  :func:`subject_token`. The payload is exactly the ZeroMQ payload (one msgpack map,
  :func:`norface_rt.wire.codec.encode`), so one decoder serves both.
* Acknowledged and in order: one background event loop publishes the messages one after the
  other and waits for each acknowledgement; a message that is not acknowledged (server
  restarting, connection lost) is sent again, with the same ``Nats-Msg-Id`` header, so the
  server's duplicate window keeps one copy. ``write`` only enqueues (bounded: when the server is
  away longer than the queue lasts, ``write`` blocks). The pipeline runs the sink on its own
  thread behind a buffer (:class:`~norface_rt.sinks.worker.SinkWorker`): a file run waits for it
  up to ``write_timeout`` (= ``retry_s``) without progress, a live run drops at that buffer
  (counted) instead of holding up the other outputs. A message still unacknowledged after
  ``retry_s`` is counted as lost and the next ``write`` raises, so the pipeline reports it (never
  silent).
* Replay: :func:`replay` (``norface-rt listen --nats URL --nats-stream NAME --from-seq N``).

nats-py is asyncio; the sink owns its loop in one thread, which the sink's worker thread hands
messages to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

from norface_rt.sinks.base import MessageDropped, Sink
from norface_rt.wire.codec import decode, encode
from norface_rt.wire.messages import Message, StatsMessage, as_message
from norface_rt.wire.names import NATS_STREAM, NATS_SUBJECT_PREFIX
from norface_rt.wire.schema import ProtocolError

log = logging.getLogger(__name__)

_TOKEN_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def subject_token(stream_id: str) -> str:
    """A stream id as one NATS subject token: letters, digits, '_' and '-' stay, every other
    byte becomes ``~XX`` (so 'lobby.cam 1' -> 'lobby~2Ecam~201'; reversible, no collisions)."""
    return "".join(ch if ch in _TOKEN_SAFE else "".join(f"~{b:02X}" for b in ch.encode("utf-8"))
                   for ch in stream_id)


def _check_name(label: str, value: str, dots: bool) -> str:
    bad = [c for c in value if c.isspace() or c in "*>" or (c == "." and not dots)]
    if not value or bad or value.startswith(".") or value.endswith(".") or ".." in value:
        raise ValueError(f"{label}: expected a NATS name without spaces, '*', '>'"
                         f"{'' if dots else ' or .'}, got {value!r}")
    return value


class NatsJetStreamSink(Sink):
    """Publishes every message to JetStream stream ``stream`` (created when missing)."""

    name = "nats"
    reconnects: int = 0

    def __init__(self, url: str, stream: str = NATS_STREAM, *,
                 subject_prefix: str = NATS_SUBJECT_PREFIX, max_pending: int = 1000,
                 connect_timeout: float = 5.0, ack_timeout: float = 2.0, retry_s: float = 60.0,
                 close_timeout: float = 10.0, check_messages: bool = True) -> None:
        from norface_rt.extras import require

        require("nats", "--nats")
        self.url = url
        self.stream = _check_name("--nats-stream", stream, dots=False)
        self.prefix = _check_name("--nats-subject-prefix", subject_prefix, dots=True)
        if max_pending < 1:
            raise ValueError(f"max_pending: expected >= 1, got {max_pending}")
        self.ack_timeout = ack_timeout
        self.retry_s = retry_s
        # A write may wait this long for the server (back-pressure); the pipeline allows for it.
        self.write_timeout = float(retry_s)
        self._interrupted = threading.Event()
        self.close_timeout = close_timeout
        self.check_messages = check_messages
        self.acked = 0
        self.lost = 0
        self.resent = 0
        self.reconnects = 0
        self.last_seq = 0
        self._reported_lost = 0
        self._last_error = ""
        self._run = uuid.uuid4().hex[:12]  # message ids are unique per sink, stable across resends
        self._stats_n = 0
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="norface-nats",
                                        daemon=True)
        self._thread.start()
        self._queue: asyncio.Queue[tuple[str, bytes, str] | None] | None = None
        self._nc: Any = None
        self._js: Any = None
        self._pump: asyncio.Future[None] | None = None
        try:
            asyncio.run_coroutine_threadsafe(self._open(max_pending, connect_timeout),
                                             self._loop).result(connect_timeout + 10)
        except Exception as exc:
            self._stop_loop()
            why = str(exc) if isinstance(exc, ConnectionError) else f"{type(exc).__name__}: {exc}"
            raise RuntimeError(f"--nats {url}: cannot use JetStream stream {stream!r}: "
                               f"{why.rstrip(': ')}") from None

    # ------------------------------------------------------------------ event loop side
    async def _open(self, max_pending: int, connect_timeout: float) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        async def reconnected() -> None:
            self.reconnects += 1
            log.warning("NATS %s: reconnected", self.url)

        async def disconnected() -> None:
            log.warning("NATS %s: disconnected; reconnecting", self.url)

        async def error(exc: Exception) -> None:  # one line each (nats-py logs a traceback)
            self._last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            log.debug("NATS %s: %s", self.url, self._last_error)

        # nats-py retries the first connection as long as reconnects are allowed (forever here,
        # so that a server restart mid-run is ridden out): the first one gets connect_timeout
        # in all, and fails with the last reason then.
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(self.url, connect_timeout=min(connect_timeout, 2.0),
                             allow_reconnect=True, max_reconnect_attempts=-1,
                             reconnect_time_wait=0.25, reconnected_cb=reconnected,
                             disconnected_cb=disconnected, error_cb=error),
                connect_timeout)
        except TimeoutError:
            raise ConnectionError(f"no NATS server answered within {connect_timeout:g} s ("
                                  f"{self._last_error or 'no answer'})") from None
        self._js = self._nc.jetstream()
        subjects = [f"{self.prefix}.>"]
        try:
            info = await self._js.stream_info(self.stream)
            have = list(info.config.subjects or [])
            if subjects[0] not in have:
                raise ValueError(f"stream {self.stream!r} exists with subjects {have}, not "
                                 f"{subjects} (use another --nats-stream or --nats-subject-prefix)")
        except NotFoundError:
            await self._js.add_stream(StreamConfig(name=self.stream, subjects=subjects,
                                                   storage=StorageType.FILE,
                                                   duplicate_window=120.0))
        self._queue = asyncio.Queue(max_pending)
        self._pump = asyncio.ensure_future(self._publish_all())

    async def _publish_all(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            if item is None:
                return
            subject, payload, msg_id = item
            deadline = time.monotonic() + self.retry_s
            delay = 0.1
            attempt = 0
            while True:
                try:
                    ack = await self._js.publish(subject, payload, timeout=self.ack_timeout,
                                                 stream=self.stream,
                                                 headers={"Nats-Msg-Id": msg_id})
                    self.acked += 1
                    self.last_seq = int(ack.seq)
                    break
                except Exception as exc:  # timeouts, no responders, connection lost
                    attempt += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    if time.monotonic() >= deadline:
                        self.lost += 1
                        log.error("NATS %s: message %s not acknowledged within %.0f s (%s)",
                                  self.url, msg_id, self.retry_s, self._last_error)
                        break
                    if attempt == 1:
                        log.warning("NATS %s: publish not acknowledged (%s); resending",
                                    self.url, self._last_error)
                    self.resent += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ Sink
    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        """Enqueue for acknowledged publishing; blocks while ``max_pending`` wait (back-pressure)."""
        if self._closed or self._queue is None:
            raise RuntimeError(f"NatsJetStreamSink on {self.url!r} is closed")
        if self.lost > self._reported_lost:
            n, self._reported_lost = self.lost - self._reported_lost, self.lost
            raise RuntimeError(f"NATS {self.url}: {n} message(s) were not acknowledged within "
                               f"{self.retry_s:g} s (last error: {self._last_error})")
        msg = as_message(msg)
        topic = msg.topic
        payload = encode(msg, check=self.check_messages)
        if isinstance(msg, StatsMessage):
            self._stats_n += 1
            msg_id = f"{self._run}:{topic}:{self._stats_n}"
        else:
            msg_id = f"{self._run}:{topic}:{msg.seq}"
        item = (f"{self.prefix}.{subject_token(topic)}", payload, msg_id)
        fut = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:  # wait for room in the queue, but give up at once when interrupted
            try:
                fut.result(0.2)
                return
            except concurrent.futures.TimeoutError:
                if self._interrupted.is_set():
                    fut.cancel()
                    raise MessageDropped(f"NATS {self.url}: interrupted while the queue was "
                                         "full") from None

    def interrupt(self) -> None:
        """Shutdown: a ``write`` waiting for room in the queue gives up (the message counts as
        dropped)."""
        self._interrupted.set()

    @property
    def unconfirmed(self) -> int:
        """Messages the server never acknowledged that no ``write`` has reported yet (those
        still queued at close, and the last ones to time out)."""
        return self.lost - self._reported_lost if self._closed else 0

    def stats(self) -> dict[str, Any]:
        return {"acked": self.acked, "resent": self.resent, "unacknowledged": self.lost,
                "reconnects": self.reconnects}

    def close(self) -> None:
        """Publish what is queued (for at most ``close_timeout`` s), then disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._queue is not None and self._pump is not None:
            queue, pump = self._queue, self._pump

            async def finish() -> None:
                await queue.put(None)
                await asyncio.wait_for(asyncio.shield(pump), self.close_timeout)

            try:
                asyncio.run_coroutine_threadsafe(finish(), self._loop).result(self.close_timeout + 5)
            except Exception:
                left = queue.qsize()
                log.error("NATS %s: %d message(s) still unacknowledged at close", self.url, left)
                self.lost += left
        if self._nc is not None:
            nc = self._nc
            try:
                asyncio.run_coroutine_threadsafe(nc.close(), self._loop).result(5)
            except Exception:
                log.debug("closing the NATS connection failed", exc_info=True)
        self._stop_loop()

    def _stop_loop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(_cancel_others(), self._loop).result(5)
        except Exception:
            log.debug("cancelling the NATS tasks failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __repr__(self) -> str:
        return (f"NatsJetStreamSink({self.url!r}, stream={self.stream!r}, acked={self.acked}, "
                f"lost={self.lost})")


async def _cancel_others() -> None:
    """Cancel every other task of the running loop and wait for them (nats-py leaves reader and
    flusher tasks behind after a failed connect), so closing the loop warns about nothing."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def replay(url: str, stream: str = NATS_STREAM, *, from_seq: int = 1,
           stream_ids: Iterable[str] | None = None, subject_prefix: str = NATS_SUBJECT_PREFIX,
           timeout: float | None = 10.0, batch: int = 256,
           on_malformed: Callable[[ProtocolError], None] | None = None
           ) -> Generator[tuple[int, dict[str, Any]], None, None]:
    """Yield ``(stream sequence, message)`` from JetStream ``stream``, oldest first, starting at
    sequence ``from_seq``, then follow new messages. ``stream_ids`` selects streams (default all,
    stats included); ``timeout`` is the longest silence tolerated (TimeoutError names the stream;
    None waits forever). Malformed payloads go to ``on_malformed`` (default: logged) and are
    skipped. An ephemeral consumer without acknowledgements: replaying changes nothing on the
    server."""
    from norface_rt.extras import require

    require("nats", "norface-rt listen --nats")
    import nats
    import nats.errors
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    if from_seq < 1:
        raise ValueError(f"--from-seq: expected >= 1, got {from_seq}")
    _check_name("--nats-stream", stream, dots=False)
    ids = list(stream_ids or [])
    subjects = ([f"{subject_prefix}.{subject_token(s)}" for s in ids] if ids
                else [f"{subject_prefix}.>"])
    loop = asyncio.new_event_loop()

    async def open_sub() -> tuple[Any, Any]:
        nc = await nats.connect(url, connect_timeout=5.0, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.25)
        js = nc.jetstream()
        cfg = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq,
                             ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
        if len(subjects) == 1:
            cfg.filter_subject = subjects[0]
        else:
            cfg.filter_subjects = subjects
        sub = await js.pull_subscribe(subjects[0], durable=None, stream=stream, config=cfg)
        return nc, sub

    try:
        try:
            nc, sub = loop.run_until_complete(open_sub())
        except Exception as exc:
            raise ValueError(f"--nats {url}: cannot read stream {stream!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
        last = time.monotonic()
        try:
            while True:
                try:
                    msgs = loop.run_until_complete(sub.fetch(batch, timeout=0.5))
                except (TimeoutError, nats.errors.TimeoutError):
                    msgs = []  # nothing new within the poll period
                if not msgs:
                    if timeout is not None and time.monotonic() - last >= timeout:
                        raise TimeoutError(f"no message in NATS stream {stream!r} at {url} "
                                           f"within {timeout:g} s")
                    continue
                last = time.monotonic()
                for m in msgs:
                    try:
                        msg = decode(m.data)
                    except ProtocolError as exc:
                        (on_malformed or (lambda e: log.warning("skipped: %s", e)))(exc)
                        continue
                    yield int(m.metadata.sequence.stream), msg
        finally:
            loop.run_until_complete(nc.close())
    finally:
        loop.run_until_complete(_cancel_others())
        loop.close()
