"""ZeroMQ publisher: real sockets, real subscriber processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zmq

from norface_rt import protocol
from norface_rt.sinks.zmq_pub import ZmqPublisher, is_loopback_endpoint
from norface_rt.types import EndOfStream

REPO = Path(__file__).resolve().parents[2]
CONSUMER = REPO / "docs" / "examples" / "consumer.py"


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("VmRSS not found in /proc/self/status")


def test_every_message_reaches_a_consumer_process_in_order(frame_msg) -> None:
    n = 300
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        proc = subprocess.Popen([sys.executable, str(CONSUMER), pub.endpoint, str(n + 1)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout=20), "consumer never subscribed"
            for i in range(n):
                pub.write(frame_msg(seq=i))
            pub.write(protocol.eos_message(EndOfStream("cam0", n), n))
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    msgs = [json.loads(line) for line in out.splitlines()]
    assert [m["seq"] for m in msgs] == list(range(n + 1))
    assert [m["type"] for m in msgs] == ["frame"] * n + ["eos"]
    assert msgs[17] == json.loads(json.dumps(frame_msg(seq=17) | {
        "capture_time": msgs[17]["capture_time"], "emit_time": msgs[17]["emit_time"]}))
    assert pub.sent == n + 1


SLOW_SUBSCRIBER = textwrap.dedent("""
    import sys, time, zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 10)
    s.setsockopt(zmq.RCVBUF, 64 * 1024)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(sys.argv[1])
    while s.poll(20000):
        s.recv_multipart()
        print("got", flush=True)
        time.sleep(0.01)
""")


def test_slow_subscriber_never_blocks_publisher_and_memory_stays_bounded(frame_msg) -> None:
    n = 20_000
    # ~8 KB per message (an extra field, as a later schema release might add, pads it): queueing
    # all 20k would cost ~160 MB, the high-water mark bounds it to ~1 MB.
    msg = frame_msg(seq=0, n_faces=2)
    msg["padding"] = "x" * 6000
    size = len(protocol.encode(msg))
    assert size > 7000
    with ZmqPublisher("tcp://127.0.0.1:*", sndhwm=100, linger_ms=0) as pub:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_SUBSCRIBER, pub.endpoint],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pub.wait_for_subscribers(1, timeout=20), "subscriber never subscribed"
            for i in range(500):  # warm up allocator and zmq buffers before measuring
                msg["seq"] = i
                pub.write(msg)
            rss0 = vm_rss_kib()
            t0 = time.monotonic()
            slowest = 0.0
            for i in range(500, 500 + n):
                msg["seq"] = i
                t = time.perf_counter()
                pub.write(msg)
                slowest = max(slowest, time.perf_counter() - t)
            elapsed = time.monotonic() - t0
            growth_mib = (vm_rss_kib() - rss0) / 1024
        finally:
            proc.kill()
            out, err = proc.communicate(timeout=10)
    received = out.count("got")
    assert received >= 1, f"slow subscriber received nothing (stderr: {err})"
    assert received < n // 2, "subscriber kept up; the test did not exercise the high-water mark"
    assert pub.sent == n + 500 and pub.refused == 0
    assert elapsed < 60, f"publishing {n} messages took {elapsed:.1f} s"
    assert slowest < 1.0, f"one write blocked for {slowest:.2f} s"
    assert growth_mib < 40, f"publisher RSS grew by {growth_mib:.1f} MiB for {n} x {size} B"


def test_ipc_endpoint(tmp_path: Path, frame_msg) -> None:
    endpoint = f"ipc://{tmp_path}/norface.sock"
    with ZmqPublisher(endpoint) as pub:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"cam0")
        sub.connect(endpoint)
        try:
            assert pub.wait_for_subscribers(1, timeout=10)
            pub.write(frame_msg(seq=0, stream_id="other"))  # filtered out by the topic
            pub.write(frame_msg(seq=0))
            assert sub.poll(5000)
            topic, msg = protocol.decode_multipart(sub.recv_multipart())
            assert topic == "cam0" and msg["seq"] == 0
            assert not sub.poll(200)
        finally:
            sub.close()
            ctx.term()


def test_subscriptions_are_counted_and_released(frame_msg) -> None:
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        assert pub.subscriptions == 0
        t = time.monotonic()
        assert pub.wait_for_subscribers(1, timeout=0.3) is False
        assert time.monotonic() - t < 2.0
        ctx = zmq.Context()
        socks = []
        for _ in range(2):
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.connect(pub.endpoint)
            socks.append(s)
        assert pub.wait_for_subscribers(2, timeout=10)
        socks.pop().close()
        deadline = time.monotonic() + 10
        while pub.subscriptions != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pub.subscriptions == 1
        for s in socks:
            s.close()
        ctx.term()


@pytest.mark.parametrize("endpoint", ["tcp://*:5556", "tcp://0.0.0.0:5556", "tcp://[::]:5556",
                                      "tcp://eth0:5556", "tcp://192.168.1.10:5556",
                                      "udp://127.0.0.1:5556"])
def test_non_loopback_bind_refused_unless_allowed(endpoint: str) -> None:
    with pytest.raises(ValueError, match="allow_remote") as exc:
        ZmqPublisher(endpoint)
    assert endpoint in str(exc.value)


def test_loopback_classification() -> None:
    for ok in ("tcp://127.0.0.1:5556", "tcp://localhost:*", "tcp://[::1]:5556", "ipc:///tmp/x",
               "inproc://x", "tcp://127.0.0.2:1"):
        assert is_loopback_endpoint(ok), ok
    with pytest.raises(ValueError, match="endpoint: expected 'transport://address'"):
        is_loopback_endpoint("127.0.0.1:5556")


def test_wildcard_bind_when_allowed(frame_msg) -> None:
    with ZmqPublisher("tcp://*:*", allow_remote=True) as pub:
        assert pub.endpoint.startswith("tcp://0.0.0.0:")


def test_bind_errors_and_bad_arguments_are_clear(frame_msg) -> None:
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        with pytest.raises(RuntimeError, match=r"cannot bind ZeroMQ endpoint 'tcp://127\.0\.0\.1:"):
            ZmqPublisher(pub.endpoint)
        bad = frame_msg()
        del bad["faces"]
        with pytest.raises(protocol.ProtocolError, match="faces: required field missing"):
            pub.write(bad)
    with pytest.raises(RuntimeError, match="closed"):
        pub.write(frame_msg())
    with pytest.raises(ValueError, match="sndhwm"):
        ZmqPublisher("tcp://127.0.0.1:*", sndhwm=0)
