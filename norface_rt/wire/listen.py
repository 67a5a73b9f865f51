"""Subscribing side: a generator of decoded messages and the ``norface-rt listen`` command body.

A listener must survive whatever arrives on the wire (another program on the same port, a newer
producer, a truncated message): malformed messages are reported with the reason and skipped, and
every wait has a timeout so a vanished publisher never hangs the listener forever unless asked to.

It also says what it did not get: a gap in a stream's ``seq`` means messages were lost on the
way (the publisher drops them for a subscriber that falls behind, see docs/protocol.md); those
are counted (``missed``), reported, and make the exit status 1. A listener that joined a stream
late counts what it missed before it joined from the first ``seq`` it sees (every stream starts
at 0): reported apart (``missed_before_join``), and a failure only with ``--until-eos``, which
asks for whole streams (a live camera joined late is normal). ``--pull`` receives from a PUSH hand-off
(``norface-rt run --push``) instead, which loses nothing; CURVE keys encrypt and authenticate
either (:mod:`norface_rt.wire.curve`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import zmq
from zmq.utils.monitor import recv_monitor_message

from norface_rt.wire.codec import MAX_PAYLOAD_BYTES, decode_multipart
from norface_rt.wire.curve import CurveClient
from norface_rt.wire.exits import ExitCode
from norface_rt.wire.names import STATS_TOPIC
from norface_rt.wire.schema import ProtocolError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "pretty")
# Delivery ids a PULL consumer remembers to recognise a message sent again (16 bytes each).
_REMEMBERED = 100_000
# The longest ZeroMQ message a listener takes: a payload at its limit, a topic at its own.
MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + 4096
# A dropped connection that libzmq has not retried within this long (it retries after 0.1 s)
# was given up by libzmq.
_GIVEN_UP_S = 1.0
_POLL_MS = 200  # wake-up period while waiting, so Ctrl-C and deadlines are honoured promptly


def _warn(exc: ProtocolError) -> None:
    log.warning("skipped a malformed message: %s", exc)


def subscribe(endpoint: str, topics: Iterable[str] = ("",), timeout: float | None = 10.0, *,
              rcvhwm: int = 1000,
              on_malformed: Callable[[ProtocolError], None] | None = None,
              curve: CurveClient | None = None, pull: bool = False, ack: str | None = None
              ) -> Generator[dict[str, Any], None, None]:
    """Yield decoded, validated messages from a norface-rt publisher at ``endpoint``.

    ``topics`` are ZeroMQ prefix filters: ``""`` is everything, a stream id selects that stream
    (and any stream whose id starts with it), ``"_stats"`` the stats messages. ``timeout`` is the
    longest silence tolerated, in seconds (None = wait forever); when it passes, TimeoutError is
    raised naming the endpoint. Malformed messages go to ``on_malformed`` (default: a logged
    warning) and are skipped. The socket is closed when the generator is closed or exhausted.
    ``curve``: the keys of a CURVE-secured publisher; ``pull``: connect a PULL socket to a PUSH
    hand-off instead (``topics`` then do not apply: it delivers everything). ``ack`` (with
    ``pull``): the producer's ``--push-ack`` endpoint; each message's delivery id is sent there
    once the caller has taken the message (asked for the next one, or closed the generator), and
    a message sent again after another consumer died is yielded only once.
    """
    if ack is not None and not pull:
        raise ValueError("ack: confirmations go to a PUSH hand-off; use it with pull=True")
    topic_list = list(topics) or [""]
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout: expected >= 0 seconds or None, got {timeout}")
    if rcvhwm < 1:
        raise ValueError(f"rcvhwm: expected >= 1, got {rcvhwm}")
    report = on_malformed or _warn
    ctx = zmq.Context(io_threads=1)
    sock: zmq.Socket[bytes] = ctx.socket(zmq.PULL if pull else zmq.SUB)
    confirm = _Confirmations(ctx, ack, curve) if ack is not None else None
    monitor: zmq.Socket[bytes] | None = None
    try:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        # A peer that sends anything longer than a payload may be (plus its topic) is
        # disconnected by libzmq when the length arrives, before any of it is held in memory.
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        if curve is not None:
            curve.apply(sock)
        if not pull:
            for t in topic_list:
                sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        # libzmq gives up on a connection whose peer broke the protocol (a message over
        # MAXMSGSIZE) instead of reconnecting: watch for a dropped connection that libzmq does
        # not retry, and connect again (one it retries is left to it: disconnecting a socket
        # whose pipe still holds messages can abort libzmq in the middle of a multipart read).
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                                          | zmq.EVENT_CONNECTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ValueError(f"endpoint: cannot connect to {endpoint!r}: {exc}") from exc
        last = time.monotonic()
        warned = reconnected = False
        dropped_at: float | None = None  # a connection was dropped and libzmq has not retried
        while True:
            ready = dict(poller.poll(_POLL_MS))
            if monitor in ready:
                dropped_at = _connection_events(monitor, dropped_at)
            if dropped_at is not None and time.monotonic() - dropped_at > _GIVEN_UP_S:
                _reconnect(sock, endpoint, quiet=reconnected)
                reconnected, dropped_at = True, None
            if sock not in ready:
                if timeout is not None and time.monotonic() - last >= timeout:
                    raise TimeoutError(f"no message from {endpoint} within {timeout:g} s")
                continue
            parts = sock.recv_multipart(zmq.NOBLOCK)
            last = time.monotonic()
            delivery = parts.pop() if pull and len(parts) == 3 else None
            if delivery is not None and confirm is None and not warned:
                warned = True
                log.warning("the producer asks for confirmations (run --push-ack): without "
                            "them it counts every message as unconfirmed")
            if confirm is not None and delivery is not None and not confirm.first(delivery):
                confirm.send(delivery)  # sent again after a consumer died: seen already
                continue
            try:
                _, msg = decode_multipart(parts)
            except ProtocolError as exc:
                report(exc)
                if confirm is not None and delivery is not None:
                    confirm.send(delivery)  # it will never read better
                continue
            try:
                yield msg
            except GeneratorExit:  # the caller took it and stopped
                if confirm is not None and delivery is not None:
                    confirm.send(delivery)
                raise
            if confirm is not None and delivery is not None:
                confirm.send(delivery)
    finally:
        if monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            monitor.close(linger=0)
        sock.close(linger=0)
        if confirm is not None:
            confirm.close()
        ctx.term()


def _connection_events(monitor: zmq.Socket[bytes], dropped_at: float | None) -> float | None:
    """Read the monitor's events: when the last connection was dropped and has not been retried
    or made again since (None: libzmq is on it, or nothing was dropped)."""
    while True:
        try:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
        except zmq.Again:
            return dropped_at
        if event == zmq.EVENT_DISCONNECTED:
            dropped_at = time.monotonic() if dropped_at is None else dropped_at
        else:  # retried or connected: libzmq reconnects by itself
            dropped_at = None


def _reconnect(sock: zmq.Socket[bytes], endpoint: str, *, quiet: bool) -> None:
    """libzmq gave up on a dropped connection (its peer broke the protocol): connect afresh."""
    (log.debug if quiet else log.warning)(
        "the connection to %s was dropped and not retried (the publisher sent a message longer "
        "than %d bytes, which is refused); connecting again", endpoint, MAX_MESSAGE_BYTES)
    with contextlib.suppress(zmq.ZMQError):
        sock.disconnect(endpoint)
    sock.connect(endpoint)


class _Confirmations:
    """A PULL consumer's confirmations to an acknowledged PUSH (``run --push-ack``): delivery
    ids go back on a PUSH socket connected to the ack endpoint, and the ids seen recently
    (:data:`_REMEMBERED`) tell a message sent again from one seen already."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 curve: CurveClient | None) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 2000)  # the last confirmations leave before exit
        if endpoint.startswith("tcp://["):
            self.sock.setsockopt(zmq.IPV6, 1)
        if curve is not None:
            curve.apply(self.sock)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(linger=0)
            raise ValueError(f"ack: cannot connect to {endpoint!r}: {exc}") from exc
        self._seen: set[bytes] = set()
        self._order: collections.deque[bytes] = collections.deque()

    def first(self, delivery: bytes) -> bool:
        """True the first time ``delivery`` is seen (it is remembered from then on)."""
        if delivery in self._seen:
            return False
        self._seen.add(delivery)
        self._order.append(delivery)
        if len(self._order) > _REMEMBERED:
            self._seen.discard(self._order.popleft())
        return True

    def send(self, delivery: bytes) -> None:
        try:
            self.sock.send(delivery, zmq.NOBLOCK)
        except zmq.Again:  # the producer is gone: nobody to confirm to
            pass

    def close(self) -> None:
        self.sock.close()


def format_pretty(msg: dict[str, Any]) -> str:
    """One human-readable line per message (the ``pretty`` listen format)."""
    t = msg["type"]
    if t == "frame":
        pts = "-" if msg["pts"] is None else f"{msg['pts']:.3f}s"
        head = (f"{msg['stream_id']} #{msg['seq']} frame {msg['frame_index']} t={pts} "
                f"{len(msg['faces'])} face(s)")
        if msg.get("untrained"):
            head += " [UNTRAINED]"
        if msg.get("error"):
            head += f" ERROR: {msg['error']}"
        parts = [head]
        for f in msg["faces"]:
            top_aus = sorted(f["au_intensity"].items(), key=lambda kv: -kv[1])[:3]
            aus = " ".join(f"{k}={v:.1f}" for k, v in top_aus)
            prob = f["emotions"].get(f["top_emotion"], float("nan"))
            parts.append(f"[{f['track_id']}] {f['top_emotion']} {prob:.2f} {aus}")
        return " | ".join(parts)
    if t == "eos":
        end = f"error: {msg['error']}" if msg["error"] else "ok"
        more = "".join(f", {msg[k]} {label}" for k, label in (
            ("skipped_frames", "skipped (undecodable)"), ("lost_frames", "lost (outages)"),
            ("reconnects", "reconnects")) if msg.get(k))
        losses = {k: v for k, v in (msg.get("sink_losses") or {}).items() if v}
        if losses:
            more += ", outputs lost " + ", ".join(f"{k} {v}" for k, v in losses.items())
        return (f"{msg['stream_id']} #{msg['seq']} END after {msg['frames']} frames, "
                f"{msg['dropped_frames']} dropped by the source{more} ({end})")
    stages = " ".join(f"{k}={v['p50_ms']:.1f}/{v['p95_ms']:.1f}ms"
                      for k, v in msg["stages"].items())
    return f"{STATS_TOPIC} fps={msg['fps']:.1f} p50/p95: {stages}"


@dataclass
class ListenResult:
    """What a listen run saw; ``exit_code`` is what ``norface-rt listen`` returns."""

    received: int = 0
    malformed: int = 0
    # Messages lost on the way: gaps in each stream's seq after the first message seen.
    missed: int = 0
    missed_by_stream: dict[str, int] = field(default_factory=dict)
    # Messages of a stream published before this listener's first one (its first seq).
    missed_before_join: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    interrupted: bool = False
    ended_streams: set[str] = field(default_factory=set)
    exit_code: int = ExitCode.OK
    count_gaps: bool = True
    _last_seq: dict[str, int] = field(default_factory=dict, repr=False)
    _open_streams: set[str] = field(default_factory=set, repr=False)

    def __int__(self) -> int:
        return int(self.exit_code)

    def record(self, msg: Mapping[str, Any]) -> None:
        """Count one received message: a gap in its stream's ``seq`` (messages missed on the
        way), and whether its stream is running or has ended."""
        self.received += 1
        if msg["type"] == "stats":
            return
        sid, seq = msg["stream_id"], msg["seq"]
        prev = self._last_seq.get(sid)
        self._last_seq[sid] = seq
        if self.count_gaps and prev is None and seq > 0:  # (a PULL consumer shares the stream)
            self.missed_before_join[sid] = seq
        gap = seq - prev - 1 if self.count_gaps and prev is not None and seq > prev + 1 else 0
        if gap:
            self.missed += gap
            self.missed_by_stream[sid] = self.missed_by_stream.get(sid, 0) + gap
        if msg["type"] == "frame":
            self._open_streams.add(sid)
        elif msg["type"] == "eos":
            self._open_streams.discard(sid)
            self.ended_streams.add(sid)

    def satisfied(self, count: int | None, until_eos: bool) -> bool:
        """Whether the requested stop condition is met: ``count`` messages, or (``until_eos``)
        every stream seen so far has ended."""
        if count is not None and self.received >= count:
            return True
        return until_eos and bool(self.ended_streams) and not self._open_streams

    def gave_up(self, wanted_more: bool) -> None:
        """The timeout passed: a failure when more was asked for (or nothing came)."""
        self.timed_out = True
        self.exit_code = ExitCode.FAILED if wanted_more or not self.received else ExitCode.OK

    def finish(self, err: TextIO, *, until_eos: bool = False) -> None:
        """Say what was missed on ``err``; missed messages make a clean listen a failure, and
        so do messages missed before joining when whole streams were asked for (``until_eos``)."""
        if self.missed_before_join:
            print("norface-rt listen: joined late: missed the first " + ", ".join(
                f"{n} message(s) of {k}" for k, n in self.missed_before_join.items())
                + " (published before this listener subscribed; start it before the run, with "
                "`run --wait-subscribers 1`, or use run --push with listen --pull)", file=err,
                flush=True)
            if until_eos and self.exit_code == ExitCode.OK:
                self.exit_code = ExitCode.FAILED
        if not self.missed:
            return
        print(f"norface-rt listen: missed {self.missed} message(s) (gaps in seq: "
              + ", ".join(f"{k} {v}" for k, v in self.missed_by_stream.items())
              + "); the publisher drops messages for a subscriber that falls behind (raise "
              "--sndhwm, read faster, or use run --push with listen --pull)", file=err, flush=True)
        if self.exit_code == ExitCode.OK:
            self.exit_code = ExitCode.FAILED


Feed = Callable[[Callable[[ProtocolError], None]], Generator[dict[str, Any], None, None]]


def _line(msg: dict[str, Any], fmt: str, res: ListenResult) -> str:
    if fmt == "jsonl":
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    line = format_pretty(msg)
    if msg["type"] == "eos":
        sid = msg["stream_id"]
        line += f"; this listener missed {res.missed_by_stream.get(sid, 0)}"
        if res.missed_before_join.get(sid):
            line += f" on the way and {res.missed_before_join[sid]} before it joined"
    return line


def run_listen(endpoint: str, out: TextIO | str | Path | None = None, fmt: str = "jsonl",
               topics: Iterable[str] | None = None, count: int | None = None,
               until_eos: bool = False, timeout: float | None = None, *,
               err: TextIO | None = None, curve: CurveClient | None = None,
               pull: bool = False, ack: str | None = None,
               messages: Feed | None = None) -> ListenResult:
    """Print (or write to ``out``) every message from ``endpoint`` until a stop condition.

    Stops after ``count`` valid messages, or with ``until_eos`` once every stream seen so far has
    sent its ``eos``, or after ``timeout`` seconds of silence, or on Ctrl-C. Malformed messages are
    reported on ``err`` (default stderr) with the reason, counted and skipped.

    Exit code (``int(result)``): 0 when the requested stop condition was met (or, with neither
    ``count`` nor ``until_eos``, when the timeout ended a listen that received something);
    1 when the timeout passed first or messages were missed (gaps in ``seq``); 130 on Ctrl-C.

    ``messages`` replaces the ZeroMQ subscription with another feed (NATS JetStream replay):
    called with the malformed-message reporter, it returns the generator of messages.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected one of {list(FORMATS)}, got {fmt!r}")
    if count is not None and count < 1:
        raise ValueError(f"count: expected >= 1 or None, got {count}")
    err_stream = err if err is not None else sys.stderr
    # Consumers that confirm share the messages with the others and get again what a departed
    # one held: their gaps in seq are other consumers' messages (the producer counts what no
    # consumer confirmed).
    res = ListenResult(count_gaps=ack is None)

    def on_malformed(exc: ProtocolError) -> None:
        res.malformed += 1
        print(f"norface-rt listen: skipped malformed message #{res.malformed}: {exc}",
              file=err_stream, flush=True)

    own_file = isinstance(out, (str, Path))
    sink: TextIO
    if isinstance(out, (str, Path)):
        sink = open(out, "w", encoding="utf-8")  # noqa: SIM115  (closed in the finally below)
    else:
        sink = out if out is not None else sys.stdout
    gen = (messages(on_malformed) if messages is not None
           else subscribe(endpoint, topics or ("",), timeout, on_malformed=on_malformed,
                          curve=curve, pull=pull, ack=ack))
    shown = "all (PULL)" if pull else ", ".join(t or "all" for t in (topics or ("",)))
    print(f"norface-rt listen: waiting for messages on {endpoint} (topics: {shown}; "
          + (f"giving up after {timeout:g} s of silence" if timeout is not None
             else "Ctrl-C to stop") + ")", file=err_stream, flush=True)
    try:
        for msg in gen:
            res.record(msg)
            sink.write(_line(msg, fmt, res) + "\n")
            sink.flush()
            if res.satisfied(count, until_eos):
                break
    except TimeoutError as exc:
        res.gave_up(wanted_more=count is not None or until_eos)
        print(f"norface-rt listen: {exc} (received {res.received}, malformed {res.malformed})",
              file=err_stream, flush=True)
    except KeyboardInterrupt:
        res.interrupted = True
        res.exit_code = ExitCode.INTERRUPTED
    finally:
        gen.close()
        if own_file:
            sink.close()
    res.finish(err_stream, until_eos=until_eos)
    return res
