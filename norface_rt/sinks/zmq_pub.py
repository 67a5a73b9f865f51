"""ZeroMQ sinks: the publisher (XPUB) and the lossless hand-off (PUSH).

:class:`ZmqPublisher` binds an XPUB socket (PUB semantics for data, plus subscription
notifications so a file job can wait for its consumers before it starts: the ZeroMQ "slow
joiner" problem). Sending never blocks: each subscriber has its own queue of at most ``sndhwm``
messages and anything beyond that is dropped for that subscriber only (``XPUB_NODROP`` stays
off), so one slow consumer can neither stall the pipeline nor grow the publisher's memory without
bound. Drops are invisible to the publisher (libzmq does not report them); consumers detect gaps
from the per-stream ``seq`` field.

What a *peer* can make the publisher hold is bounded too. libzmq keeps every subscription in a
prefix tree that costs tens of bytes per byte of topic, so one 40 MiB subscription would cost
gigabytes: ``ZMQ_MAXMSGSIZE`` disconnects a peer that sends any message longer than
``max_message_bytes``, and the publisher counts the subscriptions it is told about
(``XPUB_VERBOSER``). When their number or total length passes ``max_subscriptions`` /
``max_subscription_bytes`` -- no well-behaved subscriber comes near either -- it closes the socket
and binds a fresh one (``subscription_resets``): memory is freed, well-behaved subscribers
reconnect and re-subscribe by themselves within about 0.1 s (they see the gap in ``seq``).
libzmq cannot tell which peer sent a subscription, so it cannot drop only the offender; use
CURVE (:mod:`norface_rt.wire.curve`) to keep unknown processes out altogether.

:class:`ZmqPush` binds a PUSH socket for consumers that must not miss a message (a PULL socket
connects): with the ``block`` policy a consumer that falls behind applies back-pressure to the
pipeline (file sources slow down; live sources drop at their own queue, counted), for at most
``send_timeout`` seconds per message before messages are dropped and counted; ``drop`` never
waits and counts what the full queue refuses.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from norface_rt.sinks.base import BufferPolicy, MessageDropped, Sink
from norface_rt.wire.codec import encode_multipart
from norface_rt.wire.messages import Message
from norface_rt.wire.names import (
    DEFAULT_ENDPOINT,
    DEFAULT_PUSH_HWM,
    DEFAULT_PUSH_TIMEOUT,
    DEFAULT_SNDHWM,
    DELIVERY_ID_BYTES,
)

if TYPE_CHECKING:  # (pyzmq's authenticator, which CURVE needs, imports asyncio)
    from norface_rt.wire.curve import CurveServer

log = logging.getLogger(__name__)

# What a peer may make the publisher hold (see the module docstring). A subscription is a topic
# prefix (a stream id, "_stats" or ""); a CURVE handshake message is about 300 bytes.
MAX_MESSAGE_BYTES = 1024
MAX_SUBSCRIPTIONS = 1000
MAX_SUBSCRIPTION_BYTES = 64 * 1024
SUBSCRIPTION_QUEUE = 16  # inbound queue of the XPUB: only subscriptions travel that way

_LOCAL_TRANSPORTS = ("ipc", "inproc")


def _tcp_host(endpoint: str) -> str:
    rest = endpoint[len("tcp://"):]
    if rest.startswith("["):
        return rest[1:rest.find("]")] if "]" in rest else rest
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when binding ``endpoint`` cannot expose the socket beyond this machine."""
    transport, sep, _ = endpoint.partition("://")
    if not sep:
        raise ValueError(f"endpoint: expected 'transport://address' such as {DEFAULT_ENDPOINT!r}, "
                         f"got {endpoint!r}")
    if transport in _LOCAL_TRANSPORTS:
        return True
    if transport != "tcp":
        return False
    host = _tcp_host(endpoint)
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: may be reachable from outside
        return False


def _check_remote(endpoint: str, allow_remote: bool) -> None:
    if not is_loopback_endpoint(endpoint) and not allow_remote:
        raise ValueError(
            f"endpoint {endpoint!r} is not a loopback or ipc:// address; binding it would expose "
            "the stream to the network. Use tcp://127.0.0.1:PORT or ipc://PATH, or pass "
            "allow_remote=True (CLI: --allow-remote) to bind it deliberately.")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


class ZmqPublisher(Sink):
    """Publishes every message as ``[topic, msgpack payload]`` on a bound XPUB socket.

    Use from one thread at a time (ZeroMQ sockets are not thread-safe): the caller's until the
    pipeline starts (``wait_for_subscribers``), then the sink's own thread.
    """

    name = "zmq"

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, sndhwm: int = DEFAULT_SNDHWM,
                 linger_ms: int = 500,
                 *, allow_remote: bool = False, check_messages: bool = True,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 max_subscriptions: int = MAX_SUBSCRIPTIONS,
                 max_subscription_bytes: int = MAX_SUBSCRIPTION_BYTES,
                 curve: CurveServer | None = None) -> None:
        if not isinstance(sndhwm, int) or sndhwm < 1:
            raise ValueError(f"sndhwm: expected an integer >= 1 (0 would mean unbounded), got {sndhwm!r}")
        if not isinstance(linger_ms, int) or linger_ms < 0:
            raise ValueError(f"linger_ms: expected an integer >= 0, got {linger_ms!r}")
        self.max_message_bytes = _positive_int("max_message_bytes", max_message_bytes)
        self.max_subscriptions = _positive_int("max_subscriptions", max_subscriptions)
        self.max_subscription_bytes = _positive_int("max_subscription_bytes",
                                                    max_subscription_bytes)
        _check_remote(endpoint, allow_remote)
        self.requested_endpoint = endpoint
        self.sndhwm = sndhwm
        self.linger_ms = linger_ms
        self.check_messages = check_messages
        self.curve = curve
        self.sent = 0
        self.refused = 0  # sends libzmq refused outright (should stay 0: XPUB drops silently)
        self.subscription_resets = 0
        # Subscriptions ever received, and messages sent while none was active (nobody heard
        # them): a run publishing to nobody says so at its end.
        self.subscriptions_seen = 0
        self.unheard = 0
        self._subscriptions = 0
        self._subscription_bytes = 0
        self._topics: dict[bytes, int] = {}
        self._ctx = zmq.Context(io_threads=1)
        self._auth = None
        self._sock: zmq.Socket[bytes] | None = None
        try:
            if curve is not None:
                self._auth = curve.start_authenticator(self._ctx)
            self._sock = self._bind(endpoint)
        except BaseException as exc:
            self._teardown(linger=0)
            if isinstance(exc, zmq.ZMQError):
                raise RuntimeError(f"cannot bind ZeroMQ endpoint {endpoint!r}: {exc}") from exc
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _bind(self, endpoint: str) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        try:
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            # A peer sending anything longer (a huge subscription) is disconnected by libzmq.
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            # libzmq files every subscription a peer sends into its tree as soon as it reads it
            # from the connection, whatever the application has seen: a small inbound queue
            # keeps it reading a flood at the pace this sink counts it, so the count catches
            # a flood before libzmq has stored more than a few hundred of it.
            sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_QUEUE)
            sock.setsockopt(zmq.XPUB_NODROP, 0)  # a full subscriber queue drops, never blocks
            # Report every subscribe and unsubscribe (not only the first/last per topic) so that
            # subscriptions can be counted per subscriber.
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            if self.curve is not None:
                self.curve.apply(sock)
            if endpoint.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            sock.bind(endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    # ------------------------------------------------------------------ subscribers
    @property
    def subscriptions(self) -> int:
        """Current number of subscriptions (a subscriber to k topics counts k times)."""
        self._drain()
        return self._subscriptions

    def _drain(self) -> None:
        """Consume pending subscription notifications (they would otherwise queue in libzmq),
        keeping count, and start afresh when peers have subscribed past the bounds."""
        sock = self._require_open()
        while True:
            try:
                note = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic = note[1:]
            if note[:1] == b"\x01":
                self._topics[topic] = self._topics.get(topic, 0) + 1
                self._subscriptions += 1
                self.subscriptions_seen += 1
                self._subscription_bytes += len(topic)
            elif note[:1] == b"\x00" and self._topics.get(topic):
                self._topics[topic] -= 1
                if not self._topics[topic]:
                    del self._topics[topic]
                self._subscriptions -= 1
                self._subscription_bytes -= len(topic)
            if (self._subscriptions > self.max_subscriptions
                    or self._subscription_bytes > self.max_subscription_bytes):
                self._reset_subscriptions()
                return

    def _reset_subscriptions(self) -> None:
        """Drop every connection (and libzmq's subscription tree with them) and bind afresh."""
        self.subscription_resets += 1
        log.warning("ZeroMQ publisher %s: peers hold %d subscriptions of %d bytes in all (bounds: "
                    "%d, %d bytes); dropping every connection to free them (reset #%d, "
                    "subscribers reconnect by themselves)", self.endpoint, self._subscriptions,
                    self._subscription_bytes, self.max_subscriptions,
                    self.max_subscription_bytes, self.subscription_resets)
        sock, self._sock = self._sock, None
        assert sock is not None
        sock.close(linger=0)
        self._topics.clear()
        self._subscriptions = self._subscription_bytes = 0
        deadline = time.monotonic() + 5.0
        while True:  # the old listener closes asynchronously: the address may be busy briefly
            try:
                self._sock = self._bind(self.endpoint)
                return
            except zmq.ZMQError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot bind ZeroMQ endpoint {self.endpoint!r} again "
                                       f"after dropping its connections: {exc}") from exc
                time.sleep(0.05)

    def wait_for_subscribers(self, n: int = 1, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` subscriptions are active or ``timeout`` seconds pass.

        Messages published before a subscriber's subscription has arrived are lost for it, so a job
        with a known audience (a file run feeding one consumer) calls this before publishing.
        Returns False on timeout (the caller decides whether to go on).
        """
        if n < 0:
            raise ValueError(f"n: expected >= 0 subscribers, got {n}")
        if timeout < 0:
            raise ValueError(f"timeout: expected >= 0 seconds, got {timeout}")
        deadline = time.monotonic() + timeout
        self._drain()
        while self._subscriptions < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._require_open().poll(timeout=max(1, int(min(left, 0.5) * 1000)),
                                         flags=zmq.POLLIN):
                self._drain()
        return True

    # ------------------------------------------------------------------ Sink
    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        """Publish without blocking; a subscriber whose queue is full misses this message."""
        parts = encode_multipart(msg, check=self.check_messages)
        self._drain()
        try:
            self._require_open().send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
            self.sent += 1
            if not self._subscriptions:
                self.unheard += 1
        except zmq.Again:
            self.refused += 1

    def tick(self) -> None:
        """Idle: read subscription notifications, so a flood is noticed without traffic."""
        if self._sock is not None:
            self._drain()

    def stats(self) -> dict[str, Any]:
        return {"subscriptions": self._subscriptions,
                "subscription_resets": self.subscription_resets, "unheard": self.unheard}

    def destination(self) -> str:
        return f"published on {self.endpoint}"

    def unheard_note(self) -> str | None:
        """What a person should know at the end when messages reached no subscriber: nobody
        subscribed at all, or how many messages went out before the first one did."""
        if not self.unheard:
            return None
        if not self.subscriptions_seen:
            return (f"nobody subscribed to {self.endpoint}: its {self.sent} message(s) reached no "
                    "one (start `norface-rt listen` first and run with --wait-subscribers 1, or "
                    "save results with --jsonl FILE / --csv FILE)")
        return (f"{self.unheard} of {self.sent} message(s) on {self.endpoint} went out while "
                "nobody was subscribed (a listener that joins late misses them; --wait-subscribers "
                "N waits for N before reading the sources)")

    def close(self) -> None:
        """Close the socket, letting queued messages flush for at most ``linger_ms``."""
        if self._sock is None and self._ctx.closed:
            return
        self._teardown(self.linger_ms)

    def _teardown(self, linger: int) -> None:
        if self._sock is not None:
            self._sock.close(linger=linger)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if not self._ctx.closed:
            self._ctx.term()

    def _require_open(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise RuntimeError(f"ZmqPublisher on {self.requested_endpoint!r} is closed")
        return self._sock

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"sent={self.sent}"
        return f"ZmqPublisher({self.requested_endpoint!r}, sndhwm={self.sndhwm}, {state})"


class ZmqPush(Sink):
    """Hands every message, in order, to consumers that connect a PULL socket (load-balanced
    between several); see the module docstring for the policies. ``dropped`` counts what the
    policy gave up on (the pipeline counts it as that sink's loss).

    With ``ack_endpoint`` (``--push-ack``) consumers confirm what they have processed, and
    nothing a consumer held is lost when it dies: each message goes out as ``[topic, payload,
    delivery id]`` (:data:`DELIVERY_ID_BYTES`: 8 bytes naming this run, then the message's
    sequence number, big-endian) and stays in a replay buffer, keyed by sequence number, until
    a consumer sends its delivery id back to a PULL socket bound at ``ack_endpoint`` (one
    message may carry several ids, concatenated). When a consumer disconnects (socket monitor),
    every message still unconfirmed is sent again, oldest first, to the consumers left (so a
    consumer may see a message twice: delivery ids tell). The buffer holds at most ``replay``
    messages; when it is full, ``write`` waits for confirmations as it waits for room (the
    ``block`` policy, at most ``send_timeout``). At close it waits up to ``send_timeout`` for
    the last confirmations; what none confirmed is counted (``unconfirmed``) as this output's
    loss.
    """

    name = "push"

    def __init__(self, endpoint: str, *, hwm: int = DEFAULT_PUSH_HWM,
                 policy: BufferPolicy | str = BufferPolicy.BLOCK,
                 send_timeout: float = DEFAULT_PUSH_TIMEOUT, linger_ms: int = 2000,
                 allow_remote: bool = False, check_messages: bool = True,
                 curve: CurveServer | None = None, ack_endpoint: str | None = None,
                 replay: int | None = None) -> None:
        _positive_int("hwm", hwm)
        policy = BufferPolicy.parse(policy, "policy")
        if not send_timeout > 0:
            raise ValueError(f"send_timeout: expected a number > 0 (seconds), got {send_timeout!r}")
        _check_remote(endpoint, allow_remote)
        if ack_endpoint is not None:
            _check_remote(ack_endpoint, allow_remote)
        self.buffer_policy = policy
        self.hwm = hwm
        self.send_timeout = float(send_timeout)
        self.write_timeout = self.send_timeout
        self.linger_ms = int(linger_ms)
        self.check_messages = check_messages
        self.sent = 0
        self.dropped = 0
        self.acknowledged = ack_endpoint is not None
        self.replay = _positive_int("replay", replay) if replay is not None else replay_size(hwm)
        self.acked = 0
        self.resent = 0
        self.disconnects = 0
        self._token = os.urandom(8)  # acks of another run (a consumer kept from it) are ignored
        self._next_id = 0
        self._unacked: collections.OrderedDict[int, list[bytes]] = collections.OrderedDict()
        self._resend: collections.deque[int] = collections.deque()
        self._peer_gone = False  # a send timed out: drop at once until one succeeds again
        self._interrupted = threading.Event()
        self._ctx = zmq.Context(io_threads=1)
        self._auth = None
        self._acks: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.PUSH)
        try:
            if curve is not None:
                self._auth = curve.start_authenticator(self._ctx)
                curve.apply(self._sock)
            self._sock.setsockopt(zmq.SNDHWM, hwm)
            self._sock.setsockopt(zmq.LINGER, self.linger_ms)
            self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # PULL peers send nothing
            if endpoint.startswith("tcp://["):
                self._sock.setsockopt(zmq.IPV6, 1)
            if self.acknowledged:
                self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            self._sock.bind(endpoint)
            self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if ack_endpoint is not None:
                self._acks = self._ctx.socket(zmq.PULL)
                if curve is not None:
                    curve.apply(self._acks)
                self._acks.setsockopt(zmq.LINGER, 0)
                # an ack message is delivery ids, at most a replay buffer's worth
                self._acks.setsockopt(zmq.MAXMSGSIZE, DELIVERY_ID_BYTES * max(self.replay, 64))
                if ack_endpoint.startswith("tcp://["):
                    self._acks.setsockopt(zmq.IPV6, 1)
                self._acks.bind(ack_endpoint)
                self.ack_endpoint: str | None = self._acks.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self.ack_endpoint = None
        except BaseException as exc:
            self.close(linger=0)
            if isinstance(exc, zmq.ZMQError):
                raise RuntimeError(f"cannot bind ZeroMQ endpoint {endpoint!r}"
                                   + (f" or {ack_endpoint!r}" if ack_endpoint else "")
                                   + f": {exc}") from exc
            raise

    @property
    def unconfirmed(self) -> int:
        """Messages sent that no consumer has confirmed (all of them count as lost once the
        sink is closed)."""
        return len(self._unacked) if self._sock is None else 0

    @property
    def pending(self) -> int:
        """Messages sent and not yet confirmed (the replay buffer)."""
        return len(self._unacked)

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        if self._sock is None:
            raise RuntimeError("ZmqPush is closed")
        parts = encode_multipart(msg, check=self.check_messages)
        if self.buffer_policy is BufferPolicy.DROP or self._peer_gone:
            deadline = time.monotonic()
        else:
            deadline = time.monotonic() + self.send_timeout
        if self.acknowledged:
            self._service()
            while len(self._unacked) >= self.replay:  # room in the replay buffer first
                if self._expired(deadline):
                    self._give_up("no consumer confirmed its messages")
                self._wait_for_acks(deadline)
                self._service()
                self._send_resends()
            parts.append(self._token + self._next_id.to_bytes(8, "big"))
        self._send(parts, deadline)
        if self.acknowledged:
            self._unacked[self._next_id] = parts
            self._next_id += 1

    def _send(self, parts: list[bytes], deadline: float) -> None:
        """Send ``parts`` within ``deadline``; with acknowledgements, only after every message
        a departed consumer held has gone out again (oldest first)."""
        assert self._sock is not None
        while True:
            if self.acknowledged:
                self._service()
                self._send_resends()
            if not self._resend:
                try:
                    self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
                    self.sent += 1
                    self._peer_gone = False
                    return
                except zmq.Again:
                    pass
            if self._expired(deadline):
                self._give_up("no PULL consumer took the message in time")
            left = deadline - time.monotonic()
            self._sock.poll(timeout=int(min(left, 0.1) * 1000) + 1, flags=zmq.POLLOUT)

    def _expired(self, deadline: float) -> bool:
        return deadline - time.monotonic() <= 0 or self._interrupted.is_set()

    def _give_up(self, why: str) -> None:
        self.dropped += 1
        if self.buffer_policy is BufferPolicy.BLOCK and not self._peer_gone:
            self._peer_gone = True
            log.warning("PUSH %s: %s for %.0f s; dropping (and counting) until one does",
                        self.endpoint, why, self.send_timeout)
        raise MessageDropped(why)

    # ------------------------------------------------------------------ acknowledgements
    def _service(self) -> None:
        """Read the confirmations and disconnections that have arrived (never blocks)."""
        if self._acks is not None:
            while True:
                try:
                    data = self._acks.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                for i in range(0, len(data) - DELIVERY_ID_BYTES + 1, DELIVERY_ID_BYTES):
                    if data[i:i + 8] != self._token:
                        continue
                    if self._unacked.pop(int.from_bytes(data[i + 8:i + 16], "big"),
                                         None) is not None:
                        self.acked += 1
        if self._monitor is not None:
            lost_one = False
            while True:
                try:
                    event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                if event["event"] == zmq.EVENT_DISCONNECTED:
                    lost_one = True
            if lost_one:
                self.disconnects += 1
                self._resend = collections.deque(self._unacked)  # every unconfirmed, in order
                if self._resend:
                    log.warning("PUSH %s: a consumer went away; sending the %d message(s) no "
                                "consumer has confirmed again", self.endpoint, len(self._resend))

    def _send_resends(self) -> bool:
        """Send what a departed consumer may have held, oldest first, while consumers take it;
        True when something went out."""
        assert self._sock is not None
        progress = False
        while self._resend:
            parts = self._unacked.get(self._resend[0])
            if parts is None:  # confirmed meanwhile
                self._resend.popleft()
                continue
            try:
                self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return progress
            self._resend.popleft()
            self.resent += 1
            progress = True
        return progress

    def _wait_for_acks(self, deadline: float) -> None:
        left = max(0.0, min(deadline - time.monotonic(), 0.1))
        poller = zmq.Poller()
        assert self._acks is not None and self._sock is not None
        poller.register(self._acks, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        if self._resend:
            poller.register(self._sock, zmq.POLLOUT)
        poller.poll(int(left * 1000) + 1)

    def tick(self) -> None:
        """Idle: read confirmations, and send again what a departed consumer held."""
        if self.acknowledged and self._sock is not None:
            self._service()
            self._send_resends()

    def interrupt(self) -> None:
        self._interrupted.set()

    def stats(self) -> dict[str, Any]:
        if not self.acknowledged:
            return {"sent": self.sent}
        return {"sent": self.sent, "acked": self.acked, "resent": self.resent,
                "pending": len(self._unacked)}

    def close(self, linger: int | None = None) -> None:
        """Wait (at most ``send_timeout``, not after an interrupt) for the confirmations still
        due, then close, letting queued messages leave for ``linger_ms``."""
        if self.acknowledged and self._sock is not None and linger is None:
            deadline = time.monotonic() + self.send_timeout
            while self._unacked and not self._expired(deadline):
                self._service()
                self._send_resends()
                if self._unacked:
                    self._wait_for_acks(deadline)
            if self._unacked:
                log.error("PUSH %s: %d message(s) were never confirmed by a consumer (counted "
                          "as lost)", self.endpoint, len(self._unacked))
        if linger is None:
            linger = 0 if self._interrupted.is_set() else self.linger_ms
        for sock in (self._monitor, self._acks):
            if sock is not None:
                sock.close(linger=0)
        self._monitor = self._acks = None
        if self._sock is not None:
            if self.acknowledged:
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.disable_monitor()
            self._sock.close(linger=linger)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if not self._ctx.closed:
            self._ctx.term()


def replay_size(hwm: int) -> int:
    """Unconfirmed messages an acknowledged PUSH keeps for sending again: what its own queue
    and a consumer's may hold together, at least 64."""
    return max(64, 2 * hwm)
