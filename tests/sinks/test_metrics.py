"""The Prometheus endpoint of an edge process, scraped over HTTP during a real run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from norface_rt.serving.server import free_port


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float:
    hits = [s.value for s in samples if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]
    assert hits, f"no sample {name} {labels} in {[(s.name, s.labels) for s in samples][:12]}"
    return float(hits[0])


def test_metrics_endpoint_during_a_live_run(media_dir, landmarker_path, nats_server, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [sys.executable, "-m", "norface_rt", "run", str(media_dir / "single_face.mp4"), "--realtime",
         "--loop", "--stream-id", "lobby", "--landmarker", str(landmarker_path), "--zmq", "none",
         "--no-progress", "--metrics-port", str(port), "--nats", nats_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        first = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                m = scrape(url)
            except OSError:
                time.sleep(0.2)
                continue
            if m.get("norface_frames") and value(m["norface_frames"], "norface_frames_total",
                                                 stream="lobby") >= 10:
                if first is None:
                    first = m
                    time.sleep(1.5)
                    continue
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no frames counted within 120 s")
        assert first is not None
        n0 = value(first["norface_frames"], "norface_frames_total", stream="lobby")
        n1 = value(m["norface_frames"], "norface_frames_total", stream="lobby")
        assert n1 > n0  # a live counter, not a snapshot
        assert value(m["norface_faces"], "norface_faces_total", stream="lobby") >= n1 - 1
        assert 1.0 < value(m["norface_stream_fps"], "norface_stream_fps", stream="lobby") <= 31.0
        assert value(m["norface_dropped_frames"], "norface_dropped_frames_total", stream="lobby") >= 0
        assert value(m["norface_frame_errors"], "norface_frame_errors_total", stream="lobby") == 0
        hist = m["norface_latency_seconds"]
        assert value(hist, "norface_latency_seconds_count", stream="lobby") >= n1 - 1
        assert value(hist, "norface_latency_seconds_bucket", stream="lobby", le="+Inf") >= n1 - 1
        p50 = value(m["norface_latency_quantile_seconds"], "norface_latency_quantile_seconds",
                    stream="lobby", quantile="0.5")
        p95 = value(m["norface_latency_quantile_seconds"], "norface_latency_quantile_seconds",
                    stream="lobby", quantile="0.95")
        assert 0.0 < p50 <= p95 < 5.0
        assert value(m["norface_stage_seconds"], "norface_stage_seconds_count", stage="detect") > 0
        depths = {s.labels["queue"] for s in m["norface_queue_depth"]}
        # every bounded queue, each output's own buffer included
        assert depths == {"source:lobby", "infer", "publish", "sink:nats", "sink:metrics"}
        assert value(m["norface_reconnects"], "norface_reconnects_total", component="nats") == 0
        # the pipeline's status: the stream delivers, nothing skipped or lost, outputs keep up
        assert value(m["norface_stream_up"], "norface_stream_up", stream="lobby") == 1
        assert value(m["norface_stream_state"], "norface_stream_state", stream="lobby",
                     state="reading") == 1
        assert value(m["norface_skipped_frames"], "norface_skipped_frames_total", stream="lobby") == 0
        assert value(m["norface_lost_frames"], "norface_lost_frames_total", stream="lobby") == 0
        assert value(m["norface_sink_messages"], "norface_sink_messages_total", sink="nats",
                     outcome="written") >= n1 - 2
        assert value(m["norface_sink_messages"], "norface_sink_messages_total", sink="nats",
                     outcome="dropped") == 0
        assert value(m["norface_sink_stalled"], "norface_sink_stalled", sink="nats") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143  # SIGTERM
    try:
        scrape(url)
        raise AssertionError("the endpoint outlived its process")
    except OSError:
        pass


def _connect_idle(port: int, n: int) -> list:
    import socket

    conns = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        conns.append(c)
    return conns


def _closed_by_peer(conn, within: float) -> bool:
    """True when the server closes ``conn`` within ``within`` seconds (EOF or a reset)."""
    conn.settimeout(within)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_an_idle_connection_flood_costs_a_bounded_number_of_threads() -> None:
    """Issue 22, point 11: each idle connection to --metrics-port held a thread, without a cap
    (292 connections, 323 threads). 300 idle connections (real sockets, never a byte sent)
    now cost at most MAX_CONNECTIONS threads; the rest are closed at once."""
    import threading

    from norface_rt.sinks.metrics import MAX_CONNECTIONS, MetricsSink

    sink = MetricsSink(0)
    before = threading.active_count()
    conns = _connect_idle(sink.port, 300)
    try:
        time.sleep(1.0)  # the server accepts (and refuses) what it can
        during = threading.active_count()
        assert during <= before + MAX_CONNECTIONS + 2, f"{during - before} threads for 300 idle"
        refused = sum(_closed_by_peer(c, 0.01) for c in conns[-50:])
        assert refused == 50  # beyond the cap: closed at once
    finally:
        for c in conns:
            c.close()
        sink.close()


def test_idle_and_slowloris_connections_are_closed_and_the_endpoint_answers_again() -> None:
    """An idle connection is closed after the idle timeout, one that trickles a byte now and
    then (slowloris) at its deadline; then scrapes are answered."""
    import threading

    from norface_rt.sinks.metrics import MetricsSink

    sink = MetricsSink(0, idle_timeout=1.0, deadline=2.0, max_connections=8)
    try:
        idle = _connect_idle(sink.port, 8)  # the cap is full: a scrape now is refused
        slow = []

        def trickle() -> None:
            (c,) = _connect_idle(sink.port, 1)
            slow.append(c)
            try:
                for b in b"GET /metrics HTTP/1.1\r\n":
                    c.sendall(bytes([b]))
                    time.sleep(0.4)  # under the idle timeout, every time
            except OSError:
                pass  # closed by the server: what is expected

        assert all(_closed_by_peer(c, 3.0) for c in idle)  # idle: closed after ~1 s
        t0 = time.monotonic()
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        while not slow:
            time.sleep(0.01)
        assert _closed_by_peer(slow[0], 6.0)
        assert time.monotonic() - t0 < 4.0  # its deadline (2 s), not the 9 s it would trickle
        samples = scrape(sink.url)
        assert "norface_frames" in samples
        assert sink.stats()["connections_expired"] >= 1
        for c in idle + slow:
            c.close()
    finally:
        sink.close()
