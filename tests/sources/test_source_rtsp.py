"""RTSPSource against a real GStreamer RTSP server on loopback, and against dead endpoints.

Tests marked ``rtsp`` need ``/usr/bin/python3`` with ``gi.repository.GstRtspServer`` and x264enc
(``.ci/install-test-deps.sh``); they skip with the reason otherwise. The dead-endpoint tests need
nothing but a loopback socket.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from norface_rt.sources import RTSPSource
from norface_rt.types import EndOfStream, FramePacket

pytestmark = pytest.mark.timeout(90)  # every wait below has its own, shorter deadline

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]  # fixture `drain`
Take = Callable[..., list[FramePacket]]  # fixture `take`


def assert_live_sequence(packets: list[FramePacket]) -> None:
    idx = [p.frame_index for p in packets]
    assert all(b > a for a, b in zip(idx, idx[1:])), idx
    assert all(p.live and p.image.shape == (180, 320, 3) for p in packets)


@pytest.mark.rtsp
def test_frames_arrive_from_a_real_rtsp_server(rtsp_server: Any, take: Take) -> None:
    src = RTSPSource(rtsp_server.url, open_timeout=10.0, read_timeout=5.0)
    assert (src.live, src.policy, src.stream_id) == (True, "drop_oldest", "127.0.0.1-cam")
    with src:
        packets = take(src, 30, deadline_s=20.0)
        assert src.connected
    assert_live_sequence(packets)
    # every queued frame was either delivered or counted as dropped (FIFO eviction)
    assert packets[-1].frame_index + 1 == len(packets) + packets[-1].dropped
    pts = [p.pts for p in packets]
    assert all(t is not None for t in pts) and pts[-1] > pts[0]  # type: ignore[operator]
    assert src.reconnects == 0
    eos = src.read(2.0)
    assert isinstance(eos, EndOfStream) and eos.error is None  # stop() is a clean end


@pytest.mark.rtsp
def test_reconnects_by_itself_after_the_server_is_killed_and_restarted(
        rtsp_server: Any, take: Take) -> None:
    src = RTSPSource(rtsp_server.url, open_timeout=5.0, read_timeout=3.0, initial_backoff=0.25,
                     max_backoff=1.0)
    with src:
        before = take(src, 10, deadline_s=20.0)
        rtsp_server.kill()
        # the source notices the dead connection and keeps retrying; nothing new arrives
        between: list[FramePacket] = []  # frames decoded just before the kill
        deadline = time.monotonic() + 10.0
        while src.connected and time.monotonic() < deadline:
            if isinstance(item := src.read(0.1), FramePacket):
                between.append(item)
        assert not src.connected, "the source did not notice the server's death"
        while (item := src.read(0.05)) is not None:
            assert isinstance(item, FramePacket)
            between.append(item)
        time.sleep(1.0)  # at least one failed reconnect attempt (connection refused)
        assert src.reconnects == 0 and src.last_error is not None

        rtsp_server.start()  # same port, same mount
        after = take(src, 10, deadline_s=25.0)
        assert src.reconnects >= 1
    everything = before + between + after
    assert_live_sequence(everything)  # indices keep increasing across the reconnect
    # every index is a frame delivered, dropped (queue) or lost while the server was away
    assert after[-1].frame_index + 1 == len(everything) + after[-1].dropped + after[-1].lost
    assert after[-1].lost > 0 and src.outage_s > 1.0  # the hole is visible in the data


@pytest.mark.rtsp
def test_without_reconnect_a_dead_server_ends_the_stream_with_an_error(
        rtsp_server: Any, take: Take, drain: Drain) -> None:
    src = RTSPSource(rtsp_server.url, reconnect=False, open_timeout=10.0, read_timeout=3.0)
    with src:
        take(src, 3, deadline_s=20.0)
        rtsp_server.kill()
        _, eos = drain(src, deadline_s=10.0)
    assert eos.error is not None and "rtsp://127.0.0.1:" in eos.error


@pytest.mark.rtsp
def test_unknown_mount_is_a_final_error(rtsp_server: Any, drain: Drain) -> None:
    url = rtsp_server.url.replace("/cam", "/no-such-mount")
    with RTSPSource(url, open_timeout=5.0) as src:
        packets, eos = drain(src, deadline_s=10.0)
    assert packets == []
    assert eos.error is not None and eos.error.startswith(f"cannot open {url}: ")
    assert "404" in eos.error


def test_refused_connection_retries_then_gives_up_after_max_reconnect_time(
        drain: Drain) -> None:
    with socket.socket() as s:  # a port that is certainly closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = RTSPSource(f"rtsp://127.0.0.1:{port}/x", max_reconnect_time=1.0,
                     initial_backoff=0.1, max_backoff=0.4)
    t0 = time.monotonic()
    with src:
        _, eos = drain(src, deadline_s=10.0)
    assert time.monotonic() - t0 < 3.0
    assert eos.error is not None
    assert eos.error.startswith(f"gave up reconnecting to rtsp://127.0.0.1:{port}/x after ")
    assert "Connection refused" in eos.error


def test_the_reconnect_timeout_is_honoured_to_the_second(drain: Drain) -> None:
    """Issue 22, point 10: `--reconnect-timeout 10` gave up after 7.8 s, because the last try
    was the last backoff step before the limit. The default backoff (0.25 s doubling) against a
    port that refuses: tries at 0, 0.25, 0.75, 1.75 s, then a final one at the limit, 3 s,
    instead of giving up at 1.75 s."""
    import re

    with socket.socket() as s:  # a port that is certainly closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = RTSPSource(f"rtsp://127.0.0.1:{port}/x", max_reconnect_time=3.0)
    t0 = time.monotonic()
    with src:
        _, eos = drain(src, deadline_s=20.0)
    took = time.monotonic() - t0
    assert eos.error is not None and "Connection refused" in eos.error
    m = re.search(r"gave up reconnecting to \S+ after ([0-9.]+) s without frames", eos.error)
    assert m is not None, eos.error
    assert float(m.group(1)) >= 2.95  # (printed to 0.1 s)
    assert 3.0 <= took < 8.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers: an RTSP open blocks until its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conns.append(listener.accept()[0])
            except OSError:
                continue

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        th.join(2.0)
        for c in conns:
            c.close()
        listener.close()


def test_stop_during_a_blocked_open_returns_within_the_open_timeout(silent_server: int) -> None:
    src = RTSPSource(f"rtsp://127.0.0.1:{silent_server}/cam", open_timeout=1.0, read_timeout=1.0)
    src.start()
    time.sleep(0.3)  # the decode thread is inside av.open, waiting for an answer
    assert src.running and not src.connected
    t0 = time.monotonic()
    assert src.stop(timeout=4.0) is True
    assert time.monotonic() - t0 < 2.0
    eos = src.read(1.0)
    assert isinstance(eos, EndOfStream) and eos.error is None and eos.frames == 0


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"url must be rtsp://host\[:port\]/path"):
        RTSPSource("http://127.0.0.1/cam")
    with pytest.raises(ValueError, match=r"open_timeout must be a number >= 0 \(seconds\)"):
        RTSPSource("rtsp://127.0.0.1/cam", open_timeout=-1)
    with pytest.raises(ValueError, match=r"max_backoff must be >= initial_backoff"):
        RTSPSource("rtsp://127.0.0.1/cam", initial_backoff=2.0, max_backoff=1.0)


def test_a_silent_peer_is_reported_as_a_timeout(silent_server: int, drain: Drain) -> None:
    """A server that accepts the connection and never answers: FFmpeg says "Invalid data";
    the stream must say what happened, a timeout."""
    src = RTSPSource(f"rtsp://127.0.0.1:{silent_server}/cam", open_timeout=1.0, read_timeout=1.0,
                     reconnect=False)
    with src:
        _, eos = drain(src, deadline_s=10.0)
    assert eos.error is not None and "timed out after 1 s" in eos.error, eos.error
    assert "Invalid data" not in eos.error
    assert src.status()["state"] == "ended" and src.last_error == eos.error


def test_refused_connection_gives_up_after_max_reconnect_tries(drain: Drain) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = RTSPSource(f"rtsp://127.0.0.1:{port}/x", max_reconnect_tries=3, initial_backoff=0.05,
                     max_backoff=0.1)
    with src:
        _, eos = drain(src, deadline_s=10.0)
    assert eos.error is not None
    assert eos.error.startswith(f"gave up reconnecting to rtsp://127.0.0.1:{port}/x after 3 "
                                "failed attempt(s)")
    with pytest.raises(ValueError, match="max_reconnect_tries must be an integer >= 1"):
        RTSPSource("rtsp://127.0.0.1/cam", max_reconnect_tries=0)
