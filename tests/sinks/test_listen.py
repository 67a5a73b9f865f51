"""The listener: real publisher sockets, garbage on the wire, stop conditions and timeouts."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from norface_rt import protocol
from norface_rt.wire.listen import ListenResult, format_pretty, run_listen, subscribe
from norface_rt.sinks.zmq_pub import ZmqPublisher
from norface_rt.stats import StageStats
from norface_rt.types import EndOfStream


@pytest.fixture
def raw_pub() -> Iterator[tuple[zmq.Socket, str]]:
    """A bare XPUB socket, so the test can put bytes on the wire that no norface-rt code would."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close()
    ctx.term()


def _wait_subscribed(sock: zmq.Socket) -> None:
    assert sock.poll(10_000), "listener never subscribed"
    assert sock.recv()[:1] == b"\x01"


def _listen_in_thread(**kw: Any) -> tuple[threading.Thread, dict[str, ListenResult]]:
    box: dict[str, ListenResult] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_listen(**kw)), daemon=True)
    t.start()
    return t, box


def test_listen_skips_malformed_messages_and_continues(raw_pub, frame_msg, tmp_path: Path) -> None:
    sock, endpoint = raw_pub
    err = io.StringIO()
    out = tmp_path / "out.jsonl"
    t, box = _listen_in_thread(endpoint=endpoint, out=out, until_eos=True, timeout=15, err=err)
    _wait_subscribed(sock)
    good = frame_msg(seq=0)
    sock.send_multipart([b"cam0", b"\xc1 this is not msgpack"])
    sock.send_multipart([b"cam0"])  # one frame only
    sock.send_multipart([b"cam0", msgpack.packb({"type": "frame", "schema_version": 1})])
    sock.send_multipart(protocol.encode_multipart(good))
    sock.send_multipart([b"cam0", b"", b"third frame"])
    sock.send_multipart(protocol.encode_multipart(
        protocol.eos_message(EndOfStream("cam0", 1), 1)))
    t.join(20)
    assert not t.is_alive(), "listener did not stop at end of stream"
    res = box["r"]
    assert (res.received, res.malformed, res.timed_out, res.exit_code) == (2, 4, False, 0)
    assert res.ended_streams == {"cam0"}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [m["type"] for m in lines] == ["frame", "eos"]
    assert lines[0] == json.loads(json.dumps(good))
    report = err.getvalue()
    assert report.count("skipped malformed message") == 4
    assert "payload: expected one msgpack map" in report
    assert "framing: expected 2 frames" in report
    assert "stream_id: required field missing" in report


def test_listen_count_pretty_and_topics(frame_msg) -> None:
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        out = io.StringIO()
        t, box = _listen_in_thread(endpoint=pub.endpoint, out=out, fmt="pretty",
                                   topics=["cam1", "_stats"], count=3, timeout=15)
        assert pub.wait_for_subscribers(2, timeout=10)
        st = StageStats()
        st.add("infer", 0.012)
        for i in range(3):
            pub.write(frame_msg(seq=i, stream_id="cam0"))  # not subscribed
            pub.write(frame_msg(seq=i, stream_id="cam1", n_faces=i))
        pub.write(protocol.stats_message(st.snapshot()))
        t.join(20)
    assert not t.is_alive()
    res = box["r"]
    assert (res.received, res.exit_code) == (3, 0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("cam1 #") for line in lines)
    assert "2 face(s) [UNTRAINED]" in lines[2] and " | [1] " in lines[2]


def test_format_pretty_for_every_type(frame_msg) -> None:
    st = StageStats()
    st.add("infer", 0.012)
    assert format_pretty(protocol.stats_message(st.snapshot())).startswith("_stats fps=")
    eos = protocol.eos_message(EndOfStream("cam0", 5, dropped=1, error="gone"), 5)
    assert format_pretty(eos) == "cam0 #5 END after 5 frames, 1 dropped by the source (error: gone)"
    eos = protocol.eos_message(EndOfStream("cam0", 5, skipped=2, skipped_indices=(1, 2), lost=7,
                                           reconnects=1), 5, sink_losses={"jsonl": 3, "zmq": 0})
    assert format_pretty(eos) == ("cam0 #5 END after 5 frames, 0 dropped by the source, 2 skipped "
                                  "(undecodable), 7 lost (outages), 1 reconnects, outputs lost "
                                  "jsonl 3 (ok)")
    assert "ERROR: boom" in format_pretty(frame_msg(n_faces=0, error="boom"))


def test_listen_times_out_with_exit_code_1() -> None:
    err = io.StringIO()
    t0 = time.monotonic()
    # Nothing listens on this port: connect succeeds lazily, no message ever comes.
    res = run_listen("tcp://127.0.0.1:9", out=io.StringIO(), timeout=0.5, err=err)
    assert time.monotonic() - t0 < 5
    assert res.timed_out and res.exit_code == 1 and int(res) == 1
    assert "no message from tcp://127.0.0.1:9 within 0.5 s" in err.getvalue()


def test_subscribe_generator_timeout_and_validation() -> None:
    gen = subscribe("tcp://127.0.0.1:9", timeout=0.3)
    with pytest.raises(TimeoutError, match="within 0.3 s"):
        next(gen)
    with pytest.raises(ValueError, match="timeout"):
        next(subscribe("tcp://127.0.0.1:9", timeout=-1))
    with pytest.raises(ValueError, match="endpoint: cannot connect"):
        next(subscribe("nonsense://x", timeout=1))
    with pytest.raises(ValueError, match="fmt: expected one of"):
        run_listen("tcp://127.0.0.1:9", fmt="xml")


def test_norface_rt_listen_command(frame_msg) -> None:
    """The CLI entry point the lead wires to run_listen, run as a user would."""
    import subprocess
    import sys

    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        proc = subprocess.Popen([sys.executable, "-m", "norface_rt", "listen", pub.endpoint,
                                 "--until-eos", "--timeout", "20"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout=20), "listen never subscribed"
            pub.write(frame_msg(seq=0))
            pub.write(protocol.eos_message(EndOfStream("cam0", 1), 1))
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert [json.loads(x)["type"] for x in out.splitlines()] == ["frame", "eos"]


def test_a_listener_that_falls_behind_reports_what_it_missed(frame_msg, tmp_path: Path) -> None:
    """The listener process is stopped (SIGSTOP) while 6000 messages go out through a
    high-water mark of 20: it must say how many it missed, not "0 dropped (ok)"."""
    import signal
    import subprocess
    import sys

    with ZmqPublisher("tcp://127.0.0.1:*", sndhwm=20, linger_ms=2000) as pub:
        proc = subprocess.Popen([sys.executable, "-m", "norface_rt", "listen", pub.endpoint,
                                 "--format", "pretty", "--until-eos", "--timeout", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout=30)
            pub.write(frame_msg(seq=0))
            time.sleep(0.5)
            proc.send_signal(signal.SIGSTOP)
            for i in range(1, 6000):
                pub.write(frame_msg(seq=i))
            proc.send_signal(signal.SIGCONT)
            time.sleep(1.0)
            pub.write(protocol.eos_message(EndOfStream("cam0", 6000), 6000))
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = out.splitlines()
    got = len(lines) - 1
    assert 1 <= got < 5000, "the listener kept up; nothing was missed"
    missed = 6001 - len(lines)
    assert lines[-1].endswith(f"; this listener missed {missed}")
    assert f"missed {missed} message(s) (gaps in seq: cam0 {missed})" in err
    assert proc.returncode == 1


def _peak_rss_mib(pid: int) -> float:
    """The high-water mark of a process's resident memory since its exec (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("VmHWM not found")


def test_a_rogue_publishers_huge_message_is_refused_before_it_is_held(raw_pub, frame_msg,
                                                                      tmp_path: Path) -> None:
    """Issue 22, point 12: `listen` received a 600 MiB message from a rogue publisher before
    refusing it (+1.18 GB): its SUB socket set no maximum message size. A real `norface-rt
    listen` process and a 200 MiB message: libzmq drops the connection when the length
    arrives, the listener connects again by itself, takes the next (valid) message, and its
    peak RSS stays far below the message's size."""
    import subprocess
    import sys

    sock, endpoint = raw_pub
    proc = subprocess.Popen([sys.executable, "-m", "norface_rt", "listen", endpoint, "--count",
                             "1", "--timeout", "60", "--out", str(tmp_path / "got.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_subscribed(sock)
        sock.send_multipart([b"cam0", bytes(200 * 2**20)])
        # a listener that was disconnected (libzmq reports its unsubscription) subscribes
        # again when it reconnects
        notes = []
        deadline = time.monotonic() + 10
        while b"\x01" not in notes and time.monotonic() < deadline:
            if sock.poll(200):
                notes.append(sock.recv()[:1])
        assert b"\x01" in notes, f"the listener never came back: {notes}"
        peak = _peak_rss_mib(proc.pid)  # (before it exits: after the rogue message)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            sock.send_multipart(protocol.encode_multipart(frame_msg(seq=0)))
            time.sleep(0.2)
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    assert peak < 150, f"the listener's peak RSS was {peak:.0f} MiB"
    assert [json.loads(line)["type"] for line in (tmp_path / "got.jsonl").read_text().splitlines()] \
        == ["frame"]


def test_a_listener_that_joins_late_counts_what_it_missed_before(frame_msg) -> None:
    """Issue 21, point 1: a listener started a moment late used to be told it "missed 0" after
    missing the first 15 of 72 frames; it counts them from the first seq it sees."""
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    try:
        for seq in range(15):  # published before anyone subscribed: lost for every listener
            pub.write(frame_msg(seq=seq, n_faces=1))
        err, out = io.StringIO(), io.StringIO()
        t, box = _listen_in_thread(endpoint=pub.endpoint, out=out, fmt="pretty", until_eos=True,
                                   timeout=15, err=err)
        assert pub.wait_for_subscribers(1, timeout=10)
        for seq in range(15, 72):
            pub.write(frame_msg(seq=seq, n_faces=1))
        pub.write(EndOfStream("cam0", frames=72).to_wire(72))
        t.join(20)
    finally:
        pub.close()
    res = box["r"]
    assert res.missed == 0 and res.missed_before_join == {"cam0": 15}
    assert out.getvalue().splitlines()[-1].endswith(
        "; this listener missed 0 on the way and 15 before it joined")
    assert "joined late: missed the first 15 message(s) of cam0" in err.getvalue()
    assert res.exit_code == 1  # --until-eos asked for whole streams
    assert pub.subscriptions_seen == 1 and pub.unheard == 15
