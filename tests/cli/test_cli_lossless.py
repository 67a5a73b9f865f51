"""`--push` with `--push-ack`: what a PULL consumer held when it was killed reaches the next
consumer, and what no consumer confirmed is counted at the end (issue 22, point 8). The
consumers are real processes on real sockets; one is killed with SIGKILL mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import free_port, norface

pytestmark = pytest.mark.timeout(300)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def model_args(tiny_model_dir: Path, landmarker_path: Path) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path),
            "--no-progress", "--stats"]  # --stats: the per-output table the assertions read


# A consumer that confirms what it has written, slowly (messages pile up in its queue and in
# the producer's, as in front of a real slow consumer), or never (--no-ack).
CONSUMER = textwrap.dedent("""
    import json, sys, time, zmq, msgpack
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 10)
    pull.connect(sys.argv[1])
    ack = ctx.socket(zmq.PUSH)
    ack.connect(sys.argv[2])
    confirm = sys.argv[4] == "ack"
    with open(sys.argv[3], "w") as out:
        while pull.poll(120000):
            topic, payload, delivery = pull.recv_multipart()
            m = msgpack.unpackb(payload)
            out.write(json.dumps({"type": m["type"], "seq": m["seq"]}) + "\\n")
            out.flush()
            if confirm:
                ack.send(delivery)
            if m["type"] == "eos":
                break
            time.sleep(0.05)
""")


def test_a_consumer_killed_mid_run_loses_nothing_with_push_ack(model_args, media_dir,
                                                               tmp_path) -> None:
    """With `--push-hwm 10` and the PULL consumer killed after 20 messages, 24 or so messages
    it held (its queue, the producer's, TCP's) used to vanish while the run said 0 lost. With
    --push-ack they go to the next consumer; together the two saw all 73 messages."""
    data, acks = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    first = subprocess.Popen([sys.executable, "-c", CONSUMER, data, acks,
                              str(tmp_path / "first.jsonl"), "ack"])
    run = norface("run", str(media_dir / "single_face.mp4"), *model_args, "--push", data,
                  "--push-ack", acks, "--push-hwm", "10", "--stats-json",
                  str(tmp_path / "stats.json"), stdout=subprocess.DEVNULL,
                  stderr=subprocess.PIPE)
    second = None
    try:
        deadline = time.monotonic() + 120
        while len(lines(tmp_path / "first.jsonl")) < 20:
            assert time.monotonic() < deadline, "the first consumer received nothing"
            assert run.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = norface("listen", data, "--pull", "--ack", acks, "--until-eos", "--timeout",
                         "120", "--out", str(tmp_path / "second.jsonl"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert second.wait(timeout=150) == 0
        assert run.wait(timeout=60) == 0
        err = run.stderr.read() if run.stderr else ""
    finally:
        for p in (first, second, run):
            if p is not None and p.poll() is None:
                p.kill()
    got_first = {(m["type"], m["seq"]) for m in lines(tmp_path / "first.jsonl")}
    second_msgs = lines(tmp_path / "second.jsonl")
    got_second = [(m["type"], m["seq"]) for m in second_msgs]
    assert len(got_second) == len(set(got_second)), "the listener yielded a message twice"
    assert got_first | set(got_second) == {("frame", i) for i in range(72)} | {("eos", 72)}
    push = json.loads((tmp_path / "stats.json").read_text())["sinks"]["push"]
    assert push["resent"] > 0 and push["dropped"] == 0 and "unconfirmed" not in push
    assert push["acked"] == 73
    assert "output push: 73 written, 0 lost (buffer full), 0 failed (ok)" in err
    assert "Traceback" not in err


def test_what_no_consumer_confirmed_is_counted_at_the_end(model_args, media_dir,
                                                         tmp_path) -> None:
    """A consumer that takes every message and confirms none: the run waits --push-timeout for
    the confirmations, then counts every message as lost (exit 1)."""
    data, acks = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, data, acks,
                                 str(tmp_path / "got.jsonl"), "no-ack"])
    try:
        run = subprocess.run([sys.executable, "-m", "norface_rt", "run",
                              str(media_dir / "single_face.jpg"), *model_args, "--push", data,
                              "--push-ack", acks, "--push-timeout", "2"],
                             capture_output=True, text=True, timeout=120)
        consumer.wait(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert [m["type"] for m in lines(tmp_path / "got.jsonl")] == ["frame", "eos"]
    assert run.returncode == 1, run.stderr
    assert "output push: 2 written, 0 lost (buffer full), 0 failed, 2 never confirmed by a " \
           "consumer" in run.stderr
    assert "output(s) lost messages: push 2" in run.stderr


def test_push_without_acknowledgements_says_that_nothing_was_confirmed(model_args, media_dir,
                                                                      tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = norface("listen", endpoint, "--pull", "--until-eos", "--timeout", "120",
                       "--out", str(tmp_path / "got.jsonl"), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        run = subprocess.run([sys.executable, "-m", "norface_rt", "run",
                              str(media_dir / "single_face.jpg"), *model_args, "--push",
                              endpoint], capture_output=True, text=True, timeout=120)
        assert listener.wait(timeout=60) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
    assert run.returncode == 0, run.stderr
    assert ("--push without --push-ack: 2 message(s) handed to PULL consumers, none confirmed"
            in run.stderr)
