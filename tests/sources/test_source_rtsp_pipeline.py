"""The whole pipeline on a live RTSP stream: the camera dies, comes back, and results resume
(and the live view's health says so meanwhile)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import numpy as np
import pytest

from norface_rt.pipeline import PipelineOptions, create_pipeline
from norface_rt.sinks.base import Sink

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(120)]


class Counter(Sink):
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def close(self) -> None:
        pass

    def frames(self) -> list[dict[str, Any]]:
        with self.cond:
            return [m for m in self.messages if m["type"] == "frame"]

    def wait_frames(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while sum(m["type"] == "frame" for m in self.messages) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def test_pipeline_reconnects_to_a_restarted_rtsp_server(rtsp_server: Any, tiny_model_dir,
                                                        landmarker_path) -> None:
    sink = Counter()
    opts = PipelineOptions(sources=[rtsp_server.url], stream_ids=["cam"], model_dir=tiny_model_dir,
                           landmarker=landmarker_path,
                           source_kwargs={"open_timeout": 5.0, "read_timeout": 2.0,
                                          "initial_backoff": 0.25, "max_backoff": 1.0})
    pipe = create_pipeline(opts, [sink])
    pipe.start()
    try:
        assert sink.wait_frames(15, 30), "no frames from the RTSP stream"
        rtsp_server.kill()
        time.sleep(3.0)  # the stream is dead: the source notices and starts retrying
        n_dead = len(sink.frames())
        down = pipe.stats.snapshot()["streams"]["cam"]  # the outage is visible in the stats
        assert down["state"] in ("retrying", "connecting") and down["last_error"], down
        assert down["outage_s"] > 1.0 and down["reconnects"] == 0
        rtsp_server.start()
        assert sink.wait_frames(n_dead + 15, 40), "the pipeline did not resume after the restart"
        assert pipe.sources[0].reconnects >= 1
        up = pipe.stats.snapshot()["streams"]["cam"]
        assert up["state"] == "connected" and up["reconnects"] >= 1 and up["lost_frames"] > 0
    finally:
        pipe.stop(timeout=10)
    frames = sink.frames()
    idx = [m["frame_index"] for m in frames]
    assert all(b > a for a, b in zip(idx, idx[1:])), "frame indices must keep increasing"
    assert [m["seq"] for m in frames] == list(range(len(frames)))
    assert all(m["stream_id"] == "cam" for m in frames)
    assert sum(1 for m in frames if m["faces"]) >= 0.8 * len(frames)
    # every frame the source produced is either published or counted as dropped
    last = frames[-1]
    assert last["frame_index"] + 1 >= len(frames)
    eos = [m for m in sink.messages if m["type"] == "eos"]
    assert len(eos) == 1 and eos[0]["stream_id"] == "cam", "stop() must still publish end of stream"
    assert not pipe.errors
    # the hole left by the dead server is in the data: frame_index jumps over the frames the
    # camera would have sent, counted in lost_frames, and the time in outage_s
    jump = max(range(1, len(frames)), key=lambda i: idx[i] - idx[i - 1])
    before, after = frames[jump - 1], frames[jump]
    assert after["lost_frames"] > before["lost_frames"] >= 0
    missed_s = after["capture_time"] - before["capture_time"]
    assert missed_s > 3.0
    assert idx[jump] - idx[jump - 1] - 1 >= after["lost_frames"] - before["lost_frames"]
    assert abs((after["lost_frames"] - before["lost_frames"]) / 30.0 - missed_s) < 1.5
    assert eos[0]["reconnects"] >= 1 and eos[0]["lost_frames"] >= after["lost_frames"]
    assert eos[0]["outage_s"] > 3.0


def _health(view: Any) -> dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", view.server.port, timeout=10)
    try:
        c.request("GET", "/health")
        r = c.getresponse()
        assert r.status == 200
        return dict(json.loads(r.read()))
    finally:
        c.close()


def _health_until(view: Any, state: str, timeout: float) -> dict[str, Any]:
    end = time.monotonic() + timeout
    health = _health(view)
    while health.get("streams", {}).get("cam", {}).get("state") != state \
            and time.monotonic() < end:
        time.sleep(0.2)
        health = _health(view)
    return health


def test_the_live_views_health_shows_a_camera_outage(rtsp_server: Any, tiny_model_dir,
                                                      landmarker_path) -> None:
    """/health follows the source through an outage: running, reconnecting (the run degraded,
    the outage in the source's counters), running again."""
    from norface_rt.sinks.web.sink import HttpViewSink

    sink = Counter()
    view = HttpViewSink("127.0.0.1:0")
    opts = PipelineOptions(sources=[rtsp_server.url], stream_ids=["cam"], model_dir=tiny_model_dir,
                           landmarker=landmarker_path,
                           source_kwargs={"open_timeout": 5.0, "read_timeout": 2.0,
                                          "initial_backoff": 0.25, "max_backoff": 1.0})
    pipe = create_pipeline(opts, [sink, view])
    pipe.start()
    try:
        assert sink.wait_frames(5, 30), "no frames from the RTSP stream"
        up = _health_until(view, "running", 10)
        assert up["status"] == "ok" and up["streams"]["cam"]["state"] == "running", up
        rtsp_server.kill()
        down = _health_until(view, "reconnecting", 15)
        cam = down["streams"]["cam"]
        assert down["status"] == "degraded" and cam["state"] == "reconnecting", down
        assert cam["error"] and cam["source_state"] == "retrying", cam
        rtsp_server.start()
        back = _health_until(view, "running", 40)
        assert back["status"] == "ok" and back["streams"]["cam"]["reconnects"] >= 1, back
    finally:
        pipe.stop(timeout=10)
