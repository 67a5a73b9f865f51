"""The live view's server, over real sockets: what it serves, that every result reaches an event
client in order, that viewers share one image per frame, what a stalled viewer costs (its
losses counted, nothing else), and that bad requests are answered and hold nothing.

The sink is fed real messages (built the way the pipeline builds them) from the test's thread,
as its worker thread would; the pipeline end to end is in tests/cli/test_live_view.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from norface_rt.config import SERIES_COLORS, ModelConfig
from norface_rt.pipeline.options import SinkOptions
from norface_rt.sinks.overlay import UNTRACKED
from norface_rt.sinks.web import HttpViewSink, ServerLimits, message_json, parse_http_address
from norface_rt.sinks.web.server import MessageRing, Published
from norface_rt.sinks.web.sink import json_size_hint
from norface_rt.wire.codec import decode, encode
from norface_rt.wire.messages import EosMessage, FrameMessage, as_message

pytestmark = pytest.mark.timeout(120)


def _image(i: int, h: int = 360, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 255, (h, w, 3), np.uint8)


@pytest.fixture
def view() -> Iterator[Callable[..., HttpViewSink]]:
    made: list[HttpViewSink] = []

    def make(**kw: Any) -> HttpViewSink:
        sink = HttpViewSink("127.0.0.1:0", **kw)
        sink.bind_model(ModelConfig.for_size("tiny"))
        made.append(sink)
        return sink

    yield make
    for s in made:
        s.close()


def _get(sink: HttpViewSink, path: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _raw(sink: HttpViewSink, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send ``data`` as it is, return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", sink.server.port), timeout=wait) as s:
        if data:
            s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def _ring_when(sink: HttpViewSink, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The event ring's figures from /health once ``ready`` holds (the server takes in what
    the sink handed over every EVENT_INTERVAL), or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        ring = json.loads(_get(sink, "/health")[2])["view"]["ring"]
        if ready(ring) or time.monotonic() > deadline:
            return ring
        time.sleep(0.02)


class EventClient:
    """A Server-Sent Events reader on its own connection, as a browser's EventSource."""

    def __init__(self, sink: HttpViewSink, query: str = "", headers: dict[str, str] | None = None
                 ) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
        self.conn.request("GET", "/events" + query, headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("Content-Type") == "text/event-stream"

    def next(self) -> dict[str, Any]:
        ev: dict[str, Any] = {}
        while True:
            line = self.resp.fp.readline().decode().rstrip("\n")
            if not line:
                if "data" in ev:
                    return ev
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            ev[key] = json.loads(value) if key == "data" else value

    def close(self) -> None:
        self.conn.close()


def _frame(frame_msg: Callable[..., dict[str, Any]], seq: int, sid: str = "cam0",
           **kw: Any) -> FrameMessage:
    """A typed frame message, as the pipeline hands it to sinks."""
    msg = as_message(frame_msg(seq=seq, stream_id=sid, n_faces=kw.pop("n_faces", 1), **kw))
    assert isinstance(msg, FrameMessage)
    return msg


def test_addresses_are_loopback_unless_asked() -> None:
    assert parse_http_address("8080") == parse_http_address("127.0.0.1:8080")
    assert parse_http_address(":0").host == "127.0.0.1"
    assert parse_http_address("[::1]:9000").loopback
    assert parse_http_address("localhost:1").loopback
    for remote in ("0.0.0.0:8080", "*:8080", "192.168.1.5:80", "myhost:80"):
        with pytest.raises(ValueError, match="not a loopback address.*--allow-remote"):
            parse_http_address(remote)
        assert not parse_http_address(remote, allow_remote=True).loopback
    assert parse_http_address("*:8080", allow_remote=True).host == "0.0.0.0"
    for bad, what in (("http://x", "HOST:.PORT"), ("127.0.0.1:70000", "0..65535"),
                      ("[::1]8080", "IPv6")):
        with pytest.raises(ValueError, match=what):
            parse_http_address(bad)
    with pytest.raises(ValueError, match="--http-fps"):
        SinkOptions(zmq=None, http="8080", http_fps=0).validate()


def test_page_info_and_events_carry_every_message_in_order(view, frame_msg) -> None:
    sink = view()
    status, headers, page = _get(sink, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="live.js">' in page and "script-src 'self'" in \
        headers["content-security-policy"]
    for path, ctype in (("/live.js", "text/javascript"), ("/live.css", "text/css")):
        s, h, body = _get(sink, path)
        assert s == 200 and h["content-type"].startswith(ctype) and len(body) > 500
    info = json.loads(_get(sink, "/api/info")[2])
    assert info["model"]["au_names"][0] == "AU01" and info["emotion_colors"]["happy"]
    # the page's colours are the package's: plot's series, the overlay's untracked box
    assert info["series_colors"] == list(SERIES_COLORS)
    assert info["untracked_color"] == "#{:02x}{:02x}{:02x}".format(*UNTRACKED)
    msgs = [_frame(frame_msg, i) for i in range(40)]
    for i, m in enumerate(msgs[:10]):  # nobody reads yet: no JSON is made for them
        sink.write(m, _image(i))
    ring = _ring_when(sink, lambda r: r["last"] == 10)
    assert ring["serialised"] == 0
    ev = EventClient(sink, "?from=oldest")
    for i, m in enumerate(msgs[10:], 10):
        sink.write(m, _image(i))
    eos = EosMessage(stream_id="cam0", seq=40, frames=40, dropped_frames=0, error=None,
                     emit_time=time.time())
    sink.write(eos)
    got = [ev.next() for _ in range(41)]
    ev.close()
    # Every message, in order, numbered, as exactly the dict a ZeroMQ subscriber decodes
    # (and the JSONL file's line).
    assert [g["data"] for g in got] == [decode(encode(m)) for m in [*msgs, eos]]
    assert [g["data"] for g in got] == [json.loads(message_json(m)) for m in [*msgs, eos]]
    assert [g["event"] for g in got] == ["frame"] * 40 + ["eos"]
    assert [int(g["id"]) for g in got] == list(range(1, 42))
    # each message's JSON was made once, when it was first read
    assert _ring_when(sink, lambda r: r["serialised"] == 41)["serialised"] == 41
    health = json.loads(_get(sink, "/health")[2])
    assert health["streams"]["cam0"]["state"] == "ended"
    assert health["streams"]["cam0"]["frames"] == 40 and health["status"] == "ended"


def test_events_resume_after_last_event_id_filter_streams_and_count_what_fell_out(
        view, frame_msg) -> None:
    sink = view(limits=ServerLimits(ring_messages=16))
    for i in range(10):
        sink.write(_frame(frame_msg, i, "a"))
        sink.write(_frame(frame_msg, i, "b"))
    time.sleep(0.2)
    # A browser reconnecting with Last-Event-ID gets what came after, and only stream b.
    ev = EventClient(sink, "?stream=b", {"Last-Event-ID": "12"})
    got = [ev.next() for _ in range(4)]
    assert [(g["data"]["stream_id"], g["data"]["seq"]) for g in got] == \
        [("b", 6), ("b", 7), ("b", 8), ("b", 9)]
    ev.close()
    # One that asks for what the ring no longer holds is told how many it missed.
    ev = EventClient(sink, "?after=0")
    gap = ev.next()
    assert gap["event"] == "gap" and gap["data"]["missed"] == 4, gap
    assert ev.next()["data"]["seq"] == 2  # the oldest kept (ids 5..20 of 20)
    ev.close()
    assert sink.server.counters.events_missed == 4
    assert _get(sink, "/events?after=x")[0] == 400


def _mjpeg_parts(sink: HttpViewSink, sid: str, n: int) -> list[tuple[int, bytes]]:
    c = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
    c.request("GET", f"/stream/{sid}.mjpg")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    parts = []
    assert r.fp.readline().strip() == b"--norface-frame"
    while len(parts) < n:
        head = {}
        while (line := r.fp.readline().strip()):
            k, _, v = line.decode().partition(": ")
            head[k.lower()] = v
        body = r.fp.read(int(head["content-length"]))
        r.fp.readline()
        assert r.fp.readline().strip() == b"--norface-frame"
        parts.append((int(head["x-frame-index"]), body))
    c.close()
    return parts


def test_viewers_share_one_jpeg_per_frame_and_see_frames_advance(view, frame_msg) -> None:
    import cv2

    sink = view(max_fps=1000)
    results: dict[int, list[tuple[int, bytes]]] = {}

    def watch(k: int) -> None:
        results[k] = _mjpeg_parts(sink, "cam0", 5)

    # the stream must be known before a viewer may ask for it
    sink.write(_frame(frame_msg, 0), _image(0))
    viewers = [threading.Thread(target=watch, args=(k,)) for k in range(3)]
    for t in viewers:
        t.start()
    deadline = time.monotonic() + 5
    while sink.server.stats()["viewers"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    i = 1
    while any(t.is_alive() for t in viewers) and i < 400:
        sink.write(_frame(frame_msg, i), _image(i))
        time.sleep(0.01)
        i += 1
    for t in viewers:
        t.join(10)
    for parts in results.values():
        idx = [p[0] for p in parts]
        assert idx == sorted(set(idx)) and len(idx) == 5, idx  # advancing, never repeated
        img = cv2.imdecode(np.frombuffer(parts[-1][1], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (360, 640, 3)
    # one encode per frame whatever the number of viewers
    sent = sum(len(p) for p in results.values())
    assert sink.images < sent and sink.images <= i, (sink.images, sent, i)
    s, h, body = _get(sink, "/frame/cam0.jpg")
    assert s == 200 and h["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_a_stalled_viewer_loses_frames_counted_and_holds_up_nothing(view, frame_msg) -> None:
    sink = view(max_fps=1000, limits=ServerLimits(stall_close=3.0))
    sink.write(_frame(frame_msg, 0), _image(0))
    threads_before = threading.active_count()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a frame or two
    stalled.connect(("127.0.0.1", sink.server.port))
    stalled.sendall(b"GET /stream/cam0.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # then never reads
    healthy: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: healthy.extend(_mjpeg_parts(sink, "cam0", 30)))
    t.start()
    longest = 0.0
    for i in range(1, 200):
        t0 = time.perf_counter()
        sink.write(_frame(frame_msg, i), _image(i))
        longest = max(longest, time.perf_counter() - t0)
        time.sleep(0.01)
    t.join(10)
    assert len(healthy) == 30  # the other viewer got its frames meanwhile
    # /health says what the counters say (once the server took in the last frames: it reads
    # its inbox every EVENT_INTERVAL)
    deadline = time.monotonic() + 5
    while True:
        st = sink.server.stats()
        health = json.loads(_get(sink, "/health")[2])
        if health["view"]["images_missed"] == st["viewer_missed"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert st["viewer_missed"] > 50, st  # the stalled viewer's losses are counted
    assert health["view"]["images_missed"] == st["viewer_missed"]
    assert longest < 1.0  # write() never waited for a client (bound, not a timing claim)
    assert threading.active_count() == threads_before
    # After stall_close seconds without progress the stalled connection is closed.
    deadline = time.monotonic() + 10
    while sink.server.counters.stalled_closed == 0 and time.monotonic() < deadline:
        sink.write(_frame(frame_msg, 300), _image(300))
        time.sleep(0.1)
    assert sink.server.counters.stalled_closed >= 1
    stalled.close()


def test_bad_requests_get_an_error_and_hold_nothing(view, frame_msg) -> None:
    limits = ServerLimits(max_clients=8, head_timeout=0.5, max_head_bytes=2048)
    sink = view(token="s3cret", limits=limits)
    sink.write(_frame(frame_msg, 0), _image(0))
    threads = threading.active_count()

    def status(answer: bytes) -> int:
        return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1

    assert status(_raw(sink, b"GET /nope?token=s3cret HTTP/1.1\r\n\r\n")) == 404
    assert status(_raw(sink, b"GET /stream/nope.mjpg?token=s3cret HTTP/1.1\r\n\r\n")) == 404
    assert status(_raw(sink, b"GET /health HTTP/1.1\r\n\r\n")) == 401
    assert status(_raw(sink, b"GET /health?token=wrong HTTP/1.1\r\n\r\n")) == 401
    assert status(_raw(sink, b"GET /health HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n")) \
        == 200
    assert status(_raw(sink, b"GET /health?token=s3cret HTTP/1.1\r\n\r\n")) == 200
    assert status(_raw(sink, b"GET / HTTP/1.1\r\n\r\n")) == 200  # the page holds no data
    assert status(_raw(sink, b"POST /health?token=s3cret HTTP/1.1\r\n\r\n")) == 405
    assert status(_raw(sink, b"garbage\r\n\r\n")) == 400
    huge = b"GET / HTTP/1.1\r\n" + b"X-Junk: " + b"a" * 10_000 + b"\r\n\r\n"
    assert status(_raw(sink, huge)) == 431
    t0 = time.monotonic()
    assert status(_raw(sink, b"GET / HTTP/1.1\r\nHost: slow")) == 408  # slowloris: never ends
    assert time.monotonic() - t0 < 5
    assert status(_raw(sink, b"")) == 408  # connects and says nothing
    # More connections than the cap: the extra ones are answered 503 at once.
    held = []
    for _ in range(limits.max_clients):
        s = socket.create_connection(("127.0.0.1", sink.server.port))
        s.sendall(b"GET /stream/cam0.mjpg?token=s3cret HTTP/1.1\r\n\r\n")
        held.append(s)
    deadline = time.monotonic() + 5
    while sink.server.connections < limits.max_clients and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status(_raw(sink, b"GET /?token=s3cret HTTP/1.1\r\n\r\n")) == 503
    for s in held:
        s.close()
    deadline = time.monotonic() + 5
    while sink.server.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.server.connections == 0  # every connection released
    assert threading.active_count() == threads  # no thread per connection, none left
    rejected = json.loads(_get(sink, "/health?token=s3cret")[2])["view"]["rejected"]
    assert rejected == {"404": 2, "401": 2, "405": 1, "400": 1, "431": 1, "408": 2, "503": 1}


def test_closing_stops_the_server_and_frees_the_port(view, frame_msg) -> None:
    sink = view()
    port = sink.server.port
    ev = EventClient(sink)
    sink.write(_frame(frame_msg, 0), _image(0))
    assert ev.next()["event"] == "frame"
    n = threading.active_count()
    sink.close()
    assert threading.active_count() == n - 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    again = HttpViewSink(f"127.0.0.1:{port}")  # the address is free again
    again.close()
    ev.close()


def test_the_event_ring_is_bounded_by_count_and_bytes() -> None:
    ring = MessageRing(max_messages=50, max_bytes=10_000)
    for i in range(1, 301):
        assert ring.append("cam", "frame", b"x" * (100 + i)) == i
        assert ring.bytes <= 10_000 and ring.last - ring.first + 1 <= 50
        assert sum(len(ring.get(n).data) for n in range(ring.first, ring.last + 1)) == ring.bytes
    assert ring.last == 300 and ring.get(ring.first - 1) is None and ring.get(301) is None
    assert ring.get(300).data == b"x" * 400
    # A message whose JSON is made on first read counts its estimate until then, its JSON after;
    # it is made once, whatever the number of readers, and the bound holds throughout.
    made: list[int] = []

    def later(n: int) -> Callable[[], bytes]:
        def make() -> bytes:
            made.append(n)
            return b"y" * 50
        return make

    lazy = MessageRing(max_messages=50, max_bytes=2_000)
    for n in range(1, 101):
        assert lazy.append("cam", "frame", later(n), 200) == n
        assert lazy.bytes <= 2_000
    assert lazy.last - lazy.first + 1 == 10 and made == []  # 10 x 200 estimated bytes
    for _ in range(3):  # three readers
        assert [lazy.json(lazy.get(n)) for n in range(lazy.first, lazy.last + 1)] == [b"y" * 50] * 10
    assert made == list(range(91, 101)) and lazy.serialised == 10 and lazy.bytes == 500
    with pytest.raises(ValueError, match="size: required"):
        lazy.append("cam", "frame", later(0))
    with pytest.raises(ValueError, match="size: expected the estimated bytes"):
        Published("cam", "frame", 0, later(0))


def test_the_size_counted_before_a_message_is_serialised_is_an_upper_estimate(frame_msg) -> None:
    """json_size_hint bounds what a kept message counts against the ring before its JSON is
    made: never below its JSON's length, with or without landmarks and blendshapes."""
    import dataclasses

    from norface_rt.types import FrameResult

    for n_faces in (0, 1, 5):
        plain = as_message(frame_msg(seq=1, n_faces=n_faces))
        assert len(message_json(plain)) <= json_size_hint(plain) <= 8 * len(message_json(plain))
        fr = FrameResult.from_message(plain)
        rng = np.random.default_rng(0)
        rich = dataclasses.replace(fr, faces=[dataclasses.replace(
            f, landmarks=rng.random((478, 3)) * 600,
            blendshapes={f"bs{i}": float(v) for i, v in enumerate(rng.random(52))})
            for f in fr.faces])
        msg = as_message(rich.to_message(landmarks=True, blendshapes=True))
        assert len(message_json(msg)) <= json_size_hint(msg)
    with pytest.raises(ValueError, match="limits.ring_bytes"):
        ServerLimits(ring_bytes=0)
