"""ZeroMQ publisher sink.

An XPUB socket (PUB semantics for data, plus subscription notifications so a file job can wait for
its consumers before it starts: the ZeroMQ "slow joiner" problem). Sending never blocks: each
subscriber has its own queue of at most ``sndhwm`` messages and anything beyond that is dropped
for that subscriber only, so one slow consumer can neither stall the pipeline nor grow the
publisher's memory without bound. Drops are invisible to the publisher (libzmq does not report
them); consumers detect gaps from the per-stream ``seq`` field.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import numpy as np
import zmq

from norface_rt.protocol import DEFAULT_ENDPOINT, encode_multipart
from norface_rt.sinks.base import Sink

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


class ZmqPublisher(Sink):
    """Publishes every message as ``[topic, msgpack payload]`` on a bound XPUB socket.

    Use from one thread only (ZeroMQ sockets are not thread-safe); the pipeline's publish thread
    both waits for subscribers and writes.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, sndhwm: int = 1000, linger_ms: int = 500,
                 *, allow_remote: bool = False, check_messages: bool = True) -> None:
        if not isinstance(sndhwm, int) or sndhwm < 1:
            raise ValueError(f"sndhwm: expected an integer >= 1 (0 would mean unbounded), got {sndhwm!r}")
        if not isinstance(linger_ms, int) or linger_ms < 0:
            raise ValueError(f"linger_ms: expected an integer >= 0, got {linger_ms!r}")
        if not is_loopback_endpoint(endpoint) and not allow_remote:
            raise ValueError(
                f"endpoint {endpoint!r} is not a loopback or ipc:// address; binding it would expose "
                "the stream to the network. Use tcp://127.0.0.1:PORT or ipc://PATH, or pass "
                "allow_remote=True (CLI: --allow-remote) to bind it deliberately.")
        self.requested_endpoint = endpoint
        self.sndhwm = sndhwm
        self.linger_ms = linger_ms
        self.check_messages = check_messages
        self.sent = 0
        self.refused = 0  # sends libzmq refused outright (should stay 0: XPUB drops silently)
        self._subscriptions = 0
        self._ctx = zmq.Context(io_threads=1)
        self._sock: zmq.Socket[bytes] | None = self._ctx.socket(zmq.XPUB)
        try:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, linger_ms)
            # Report every subscribe and unsubscribe (not only the first/last per topic) so that
            # subscriptions can be counted per subscriber.
            self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            if endpoint.startswith("tcp://["):
                self._sock.setsockopt(zmq.IPV6, 1)
            self._sock.bind(endpoint)
            self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            self._sock = None
            self._ctx.term()
            raise RuntimeError(f"cannot bind ZeroMQ endpoint {endpoint!r}: {exc}") from exc

    # ------------------------------------------------------------------ subscribers
    @property
    def subscriptions(self) -> int:
        """Current number of subscriptions (a subscriber to k topics counts k times)."""
        self._drain()
        return self._subscriptions

    def _drain(self) -> None:
        """Consume pending subscription notifications (they would otherwise queue in libzmq)."""
        sock = self._require_open()
        while True:
            try:
                note = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if note[:1] == b"\x01":
                self._subscriptions += 1
            elif note[:1] == b"\x00":
                self._subscriptions = max(0, self._subscriptions - 1)

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
        sock = self._require_open()
        deadline = time.monotonic() + timeout
        self._drain()
        while self._subscriptions < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if sock.poll(timeout=max(1, int(left * 1000)), flags=zmq.POLLIN):
                self._drain()
        return True

    # ------------------------------------------------------------------ Sink
    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        """Publish without blocking; a subscriber whose queue is full misses this message."""
        sock = self._require_open()
        parts = encode_multipart(msg, check=self.check_messages)
        self._drain()
        try:
            sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=True)
            self.sent += 1
        except zmq.Again:
            self.refused += 1

    def close(self) -> None:
        """Close the socket, letting queued messages flush for at most ``linger_ms``."""
        if self._sock is None:
            return
        self._sock.close(linger=self.linger_ms)
        self._sock = None
        self._ctx.term()

    def _require_open(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise RuntimeError(f"ZmqPublisher on {self.requested_endpoint!r} is closed")
        return self._sock

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"sent={self.sent}"
        return f"ZmqPublisher({self.requested_endpoint!r}, sndhwm={self.sndhwm}, {state})"
