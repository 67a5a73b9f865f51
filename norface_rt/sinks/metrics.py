"""Prometheus metrics endpoint of one edge process (``--metrics-port PORT``).

A sink, because every figure it shows is read off the messages the pipeline publishes: it sees
each frame (stream, drops, errors, capture-to-publish latency, stage timings) on its own thread
(:class:`~norface_rt.sinks.worker.SinkWorker`). Queue depths, reconnections and the pipeline's
status (each stream's state and outages, each output's losses) are not in every message: the
pipeline hands every sink three callables (:meth:`MetricsSink.watch`, a declared hook of
:class:`~norface_rt.sinks.base.Sink`), which this one reads at scrape time.

Exposed (``norface_`` prefix; label ``stream`` is the stream id):

* ``frames_total``, ``faces_total``, ``frame_errors_total`` -- counters per stream;
* ``dropped_frames_total`` -- frames a live source dropped (drop-oldest), per stream;
* ``skipped_frames_total`` -- frames of a file that could not be decoded, per stream;
* ``lost_frames_total`` / ``outage_seconds_total`` -- frames a live stream missed while
  disconnected and the time it was away, per stream;
* ``stream_up`` -- 1 while a stream delivers (state ``connected`` or ``reading``), else 0, and
  ``stream_state`` -- 1 for the stream's current state (label ``state``: connecting, connected,
  reading, retrying, ended);
* ``stream_fps`` -- frames/s per stream over the last ``window_s`` seconds (``rate(frames_total)``
  gives the same in Prometheus, this is for a glance at the endpoint);
* ``latency_seconds`` -- histogram of capture-to-publish latency per stream, and
  ``latency_quantile_seconds{quantile=0.5|0.95|0.99}`` over the last ``window`` frames
  (prometheus_client's Summary has no quantiles);
* ``stage_seconds`` -- histogram of each pipeline stage's time per frame (label ``stage``);
* ``queue_depth`` -- items waiting in each bounded queue (label ``queue``);
* ``reconnects_total`` -- reconnections of the Triton backend, of sinks and of live sources
  (label ``component``; sources as ``source:<stream id>``);
* ``sink_messages_total`` -- messages each output wrote, dropped (buffer full, stalled) or failed
  on (labels ``sink``, ``outcome``), and ``sink_stalled`` -- 1 while an output is stalled.

The registry is this sink's own (not the process-global one), so two pipelines in one process
do not mix their figures; the HTTP server listens on loopback unless told otherwise.

What a client can make the endpoint hold is bounded (:class:`BoundedMetricsServer`): at most
``MAX_CONNECTIONS`` at a time, each a thread (further ones are closed at once and counted), a
connection that sends nothing for ``IDLE_TIMEOUT_S`` is closed, and so is one still open
``REQUEST_DEADLINE_S`` after it was accepted however slowly it trickles bytes (slowloris). A
scrape takes milliseconds; a flood of idle connections costs a bounded number of threads and
leaves the endpoint answering once they are gone.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import numpy as np

from norface_rt.sinks.base import Probe, Sink
from norface_rt.wire.messages import EosMessage, FrameMessage, Message, as_message

# Where the endpoint listens unless told otherwise (loopback): `run`'s --metrics-host default.
DEFAULT_HOST = "127.0.0.1"

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0)
QUANTILES = (0.5, 0.95, 0.99)


# What one metrics endpoint may hold for its clients (see the module docstring).
MAX_CONNECTIONS = 16
IDLE_TIMEOUT_S = 5.0
REQUEST_DEADLINE_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    """A scrape's handler: no access log; a client that sends nothing for the idle timeout is
    dropped (the socket's timeout, set by ``StreamRequestHandler.setup``)."""

    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base's name)
        """Log nothing."""


class BoundedMetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``max_connections`` of them; every connection is
    closed after ``deadline`` seconds (checked every ``poll`` seconds of ``serve_forever``)."""

    daemon_threads = True
    request_queue_size = 128  # (socketserver's 5 makes a flood stall good clients' connects)

    def __init__(self, address: tuple[str, int], app: Any, *,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT_S,
                 deadline: float = REQUEST_DEADLINE_S) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        handler = type("_Handler", (_QuietHandler,), {"timeout": idle_timeout})
        super().__init__(address, handler)
        self.set_app(app)
        self.max_connections = max_connections
        self.deadline = deadline
        self.refused = 0  # connections closed at once: the cap was reached
        self.expired = 0  # connections closed at their deadline
        self._open: dict[socket.socket, float] = {}
        self._lock = threading.Lock()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open[request] = time.monotonic()
        if full:
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between accepts: end the connections that have outlived their deadline (their
        thread, blocked in a read, returns at once)."""
        now = time.monotonic()
        with self._lock:
            late = [sock for sock, t in self._open.items() if now - t > self.deadline]
        for sock in late:
            self.expired += 1
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or went away is not worth a traceback."""


class _Stream:
    def __init__(self, window: int) -> None:
        self.frames = 0
        self.faces = 0
        self.errors = 0
        self.dropped = 0
        self.skipped = 0
        self.lost = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.arrivals: collections.deque[float] = collections.deque()


class MetricsSink(Sink):
    """Serves ``/metrics`` on ``host:port`` for as long as the sink is open."""

    name = "metrics"

    def __init__(self, port: int, host: str = DEFAULT_HOST, *, window: int = 1000,
                 window_s: float = 10.0, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT_S, deadline: float = REQUEST_DEADLINE_S
                 ) -> None:
        from norface_rt.extras import require

        require("metrics", "--metrics-port")
        from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app

        if not 0 <= port <= 65535:
            raise ValueError(f"--metrics-port: expected 0..65535, got {port}")
        self.window_s = window_s
        self._window = window
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._queue_depths: Probe | None = None
        self._reconnects: Probe | None = None
        self._status: Probe | None = None
        self.registry = CollectorRegistry()
        self._latency = Histogram("norface_latency_seconds", "capture-to-publish latency per frame",
                                  ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._stage = Histogram("norface_stage_seconds", "time of each pipeline stage per frame",
                                ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.registry.register(self)  # collect() below: counters, gauges read at scrape time
        self._server: BoundedMetricsServer | None = None
        try:
            self._server = BoundedMetricsServer((host, port), make_wsgi_app(self.registry),
                                                max_connections=max_connections,
                                                idle_timeout=idle_timeout, deadline=deadline)
        except OSError as exc:
            raise RuntimeError(f"--metrics-port {port}: cannot listen on {host}:{port}: {exc}") from exc
        self._server_thread = threading.Thread(target=self._server.serve_forever,
                                               kwargs={"poll_interval": 0.5},
                                               name="norface-metrics", daemon=True)
        self._server_thread.start()
        self.port = int(self._server.server_address[1])
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stats(self) -> dict[str, Any]:
        server = self._server
        return {} if server is None else {"connections_refused": server.refused,
                                          "connections_expired": server.expired}

    def watch(self, *, queue_depths: Probe | None = None, reconnects: Probe | None = None,
              status: Probe | None = None) -> None:
        """Figures that are not in messages, read at each scrape (the pipeline's
        :meth:`~norface_rt.pipeline.runner.Pipeline.queue_depths`, ``reconnects`` and
        ``status``)."""
        self._queue_depths = queue_depths
        self._reconnects = reconnects
        self._status = status

    # ------------------------------------------------------------------ Sink
    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if not isinstance(msg, (FrameMessage, EosMessage)):
            return
        sid = str(msg.stream_id)
        with self._lock:
            st = self._streams.get(sid)
            if st is None:
                st = self._streams[sid] = _Stream(self._window)
            st.dropped = int(msg.dropped_frames)
            st.skipped = int(msg.skipped_frames)
            st.lost = int(msg.lost_frames)
            if isinstance(msg, EosMessage):
                return
            now = time.monotonic()
            st.frames += 1
            st.faces += len(msg.faces)
            st.errors += 1 if msg.error else 0
            latency = max(0.0, float(msg.emit_time) - float(msg.capture_time))
            st.latencies.append(latency)
            st.arrivals.append(now)
            while st.arrivals and st.arrivals[0] < now - self.window_s:
                st.arrivals.popleft()
        self._latency.labels(sid).observe(latency)
        for stage, ms in msg.timings_ms.items():
            self._stage.labels(str(stage)).observe(float(ms) / 1000.0)

    # ------------------------------------------------------------------ collector
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        frames = CounterMetricFamily("norface_frames", "frames published", labels=["stream"])
        faces = CounterMetricFamily("norface_faces", "faces analysed", labels=["stream"])
        errors = CounterMetricFamily("norface_frame_errors", "frames published with an error",
                                     labels=["stream"])
        dropped = CounterMetricFamily("norface_dropped_frames",
                                      "frames a live source dropped (drop-oldest)", labels=["stream"])
        skipped = CounterMetricFamily("norface_skipped_frames",
                                      "frames of a file that could not be decoded", labels=["stream"])
        lost = CounterMetricFamily("norface_lost_frames",
                                   "frames a live stream missed while disconnected",
                                   labels=["stream"])
        fps = GaugeMetricFamily("norface_stream_fps", f"frames/s over the last {self.window_s:g} s",
                                labels=["stream"])
        quant = GaugeMetricFamily("norface_latency_quantile_seconds",
                                  f"capture-to-publish latency quantiles over the last "
                                  f"{self._window} frames", labels=["stream", "quantile"])
        now = time.monotonic()
        with self._lock:
            for sid, st in self._streams.items():
                frames.add_metric([sid], st.frames)
                faces.add_metric([sid], st.faces)
                errors.add_metric([sid], st.errors)
                dropped.add_metric([sid], st.dropped)
                skipped.add_metric([sid], st.skipped)
                lost.add_metric([sid], st.lost)
                recent = sum(1 for t in st.arrivals if t >= now - self.window_s)
                fps.add_metric([sid], recent / self.window_s)
                if st.latencies:
                    values = np.percentile(np.fromiter(st.latencies, float), [q * 100 for q in QUANTILES])
                    for q, v in zip(QUANTILES, values):
                        quant.add_metric([sid, str(q)], float(v))
        yield from (frames, faces, errors, dropped, skipped, lost, fps, quant)
        depth = GaugeMetricFamily("norface_queue_depth", "items waiting in each bounded queue",
                                  labels=["queue"])
        for name, n in (self._queue_depths() if self._queue_depths else {}).items():
            depth.add_metric([name], n)
        yield depth
        rec = CounterMetricFamily("norface_reconnects", "reconnections to a server",
                                  labels=["component"])
        for name, n in (self._reconnects() if self._reconnects else {}).items():
            rec.add_metric([name], n)
        yield rec
        yield from self._collect_status()

    def _collect_status(self) -> Iterator[Any]:
        """Per-stream state and outages, per-output losses (the pipeline's ``status()``)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from norface_rt.sources.base import STATES

        status = dict(self._status()) if self._status else {}
        up = GaugeMetricFamily("norface_stream_up", "1 while the stream delivers frames",
                               labels=["stream"])
        state = GaugeMetricFamily("norface_stream_state", "1 for the stream's current state",
                                  labels=["stream", "state"])
        outage = CounterMetricFamily("norface_outage_seconds",
                                     "time a live stream was disconnected", labels=["stream"])
        for sid, st in (status.get("streams") or {}).items():
            now = str(st.get("state", ""))
            up.add_metric([sid], 1.0 if now in ("connected", "reading") else 0.0)
            for name in STATES:
                state.add_metric([sid, name], 1.0 if name == now else 0.0)
            if "outage_s" in st:
                outage.add_metric([sid], float(st["outage_s"]))
        messages = CounterMetricFamily("norface_sink_messages",
                                       "messages each output wrote, dropped or failed on",
                                       labels=["sink", "outcome"])
        stalled = GaugeMetricFamily("norface_sink_stalled", "1 while the output is stalled",
                                    labels=["sink"])
        for name, c in (status.get("sinks") or {}).items():
            for outcome in ("written", "dropped", "failed"):
                messages.add_metric([name, outcome], int(c.get(outcome, 0)))
            stalled.add_metric([name], 1.0 if c.get("stalled") else 0.0)
        yield from (up, state, outage, messages, stalled)

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected at scrape time only (auto_describe must not call collect early)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
