"""Faults injected for real against `norface-rt run` as a user runs it: a pipe whose reader
stops, signals, SIGKILL, damaged video, a dead camera, a slow PUSH consumer, CURVE keys."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import pytest
from cli_helpers import free_port, norface

pytestmark = pytest.mark.timeout(300)


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.1)


def csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def model_args(tiny_model_dir: Path, landmarker_path: Path) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path),
            "--no-progress"]


def test_a_jsonl_pipe_nobody_reads_stalls_only_itself(model_args, media_dir, tmp_path) -> None:
    """`--jsonl /dev/stdout` into a pipe whose reader never reads: CSV and ZeroMQ get every
    frame and the end of stream, the run ends by itself, and the JSONL's losses are reported."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = norface("listen", endpoint, "--until-eos", "--out", str(tmp_path / "zmq.jsonl"),
                       "--timeout", "120", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = norface("run", str(media_dir / "single_face.mp4"), *model_args, "--zmq", endpoint,
                  "--wait-subscribers", "1", "--jsonl", "/dev/stdout", "--csv",
                  str(tmp_path / "out.csv"), "--sink-timeout", "1", "--sink-buffer", "8",
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # stdout: never read
    try:
        assert listener.wait(timeout=180) == 0
        assert run.wait(timeout=60) == 1  # ended by itself; 1: an output lost messages
        err = run.stderr.read() if run.stderr else ""
    finally:
        for p in (run, listener):
            if p.poll() is None:
                p.kill()
    msgs = jsonl(tmp_path / "zmq.jsonl")
    assert [m["frame_index"] for m in msgs if m["type"] == "frame"] == list(range(72))
    assert msgs[-1]["type"] == "eos" and msgs[-1]["sink_losses"]["jsonl"] > 0
    assert msgs[-1]["sink_losses"]["csv"] == 0 and msgs[-1]["sink_losses"]["zmq"] == 0
    assert len(csv_rows(tmp_path / "out.csv")) == sum(len(m["faces"]) for m in msgs
                                                      if m["type"] == "frame") > 60
    assert "output(s) lost messages: jsonl" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_ends_the_run_within_10_s_whatever_an_output_does(
        model_args, media_dir, tmp_path, sig, code) -> None:
    """A file paced in real time, its JSONL going into a pipe nobody reads: the signal ends the
    process within 10 s with 130 / 143; the subscriber gets an end of stream that says the file
    was interrupted and counts exactly the frames published. SIGHUP (a terminal that closes)
    killed the run at once before issue 22."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = norface("listen", endpoint, "--until-eos", "--out", str(tmp_path / "zmq.jsonl"),
                       "--timeout", "120", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = norface("run", str(media_dir / "single_face.mp4"), *model_args, "--realtime",
                  "--zmq", endpoint, "--wait-subscribers", "1", "--jsonl", "/dev/stdout",
                  "--csv", str(tmp_path / "out.csv"),
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # stdout: never read
    try:
        wait_for(lambda: len(csv_rows(tmp_path / "out.csv")) >= 10, 120, "no CSV rows")
        t0 = time.monotonic()
        run.send_signal(sig)
        rc = run.wait(timeout=30)
        took = time.monotonic() - t0
        assert listener.wait(timeout=30) == 0
        err = run.stderr.read() if run.stderr else ""
    finally:
        for p in (run, listener):
            if p.poll() is None:
                p.kill()
    assert rc == code, err
    assert took < 10.0, f"the run took {took:.1f} s to end after the signal"
    msgs = jsonl(tmp_path / "zmq.jsonl")
    frames = [m for m in msgs if m["type"] == "frame"]
    eos = msgs[-1]
    assert eos["type"] == "eos" and 10 <= len(frames) < 72
    assert eos["error"].startswith("interrupted at frame ")
    assert eos["frames"] == eos["seq"] == len(frames)
    assert "Traceback" not in err


def test_sigkill_leaves_a_playable_overlay(model_args, media_dir, tmp_path) -> None:
    out = tmp_path / "overlay.mp4"
    run = norface("run", str(media_dir / "single_face.mp4"), *model_args, "--realtime",
                  "--loop", "--zmq", "none", "--overlay", str(out), "--csv",
                  str(tmp_path / "o.csv"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(csv_rows(tmp_path / "o.csv")) >= 60, 120, "no progress")
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    with av.open(str(out)) as c:  # a plain mp4 without its index would not even open
        n = sum(1 for _ in c.decode(video=0))
    assert n >= 24, f"only {n} frames readable after SIGKILL"


def test_a_corrupt_frame_is_skipped_and_the_rest_delivered(model_args, flipped_sector_video,
                                                           tmp_path) -> None:
    bad, k = flipped_sector_video
    res = cli("run", str(bad), *model_args, "--zmq", "none", "--jsonl", str(tmp_path / "a.jsonl"))
    assert res.returncode == 0, res.stderr
    msgs = jsonl(tmp_path / "a.jsonl")
    frames = [m for m in msgs if m["type"] == "frame"]
    assert [m["frame_index"] for m in frames] == [i for i in range(72) if i != k]
    assert all(m["skipped_frames"] == (1 if m["frame_index"] > k else 0) for m in frames)
    eos = msgs[-1]
    assert eos["error"] is None and eos["skipped_frame_indices"] == [k]
    assert eos["skipped_frames"] == 1 and eos["frames"] == 71
    assert "1 undecodable frame(s) skipped" in res.stderr

    strict = cli("run", str(bad), *model_args, "--zmq", "none", "--jsonl",
                 str(tmp_path / "b.jsonl"), "--stop-on-decode-error")
    assert strict.returncode == 1
    msgs = jsonl(tmp_path / "b.jsonl")
    assert len([m for m in msgs if m["type"] == "frame"]) == k
    assert msgs[-1]["error"].startswith(f"decode error at frame {k}")


def test_outputs_are_not_created_when_the_run_cannot_start(tiny_model_dir, media_dir,
                                                           tmp_path) -> None:
    outs = [tmp_path / "r.jsonl", tmp_path / "r.csv", tmp_path / "r.mp4"]
    res = cli("run", str(media_dir / "single_face.mp4"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(tmp_path / "missing.task"), "--zmq", "none",
              "--jsonl", str(outs[0]), "--csv", str(outs[1]), "--overlay", str(outs[2]),
              timeout=120)
    assert res.returncode == 2 and "missing.task" in res.stderr
    assert not any(p.exists() for p in outs)


def test_a_dead_camera_is_given_up_after_the_tries_asked_for(model_args, tmp_path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    res = cli("run", f"rtsp://127.0.0.1:{port}/cam", *model_args, "--zmq", "none",
              "--reconnect-tries", "3", "--jsonl", str(tmp_path / "r.jsonl"), timeout=120)
    assert res.returncode == 1
    (eos,) = jsonl(tmp_path / "r.jsonl")
    assert eos["error"].startswith(f"gave up reconnecting to rtsp://127.0.0.1:{port}/cam after "
                                   "3 failed attempt(s)")
    assert "Connection refused" in eos["error"]
    assert time.monotonic() - t0 < 60


SLOW_CONSUMER = textwrap.dedent("""
    import json, sys, time, zmq, msgpack
    s = zmq.Context().socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 1)
    s.connect(sys.argv[1])
    with open(sys.argv[2], "w") as out:
        while s.poll(120000):
            _, payload = s.recv_multipart()
            m = msgpack.unpackb(payload)
            out.write(json.dumps(m) + "\\n")
            out.flush()
            if m["type"] == "eos":
                break
            time.sleep(0.1)  # ~10 messages a second: far slower than the pipeline
""")


def test_push_hands_every_message_to_a_slow_consumer(model_args, media_dir, tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    consumer = subprocess.Popen([sys.executable, "-c", SLOW_CONSUMER, endpoint,
                                 str(tmp_path / "pulled.jsonl")])
    try:
        # no --zmq: a run whose only output is --push binds no PUB socket (as a file-only run)
        res = cli("run", str(media_dir / "single_face.mp4"), *model_args,
                  "--push", endpoint, "--push-hwm", "2", "--sink-buffer", "4", "--stats")
        assert consumer.wait(timeout=120) == 0
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert res.returncode == 0, res.stderr
    msgs = jsonl(tmp_path / "pulled.jsonl")
    assert [m["seq"] for m in msgs] == list(range(73))  # 72 frames + eos: nothing lost
    assert msgs[-1]["type"] == "eos" and msgs[-1]["sink_losses"] == {"push": 0}
    assert "output push: 73 written, 0 lost" in res.stderr
    assert "publishing on" not in res.stderr and "output zmq" not in res.stderr


def test_curve_run_and_listen_with_keys(model_args, media_dir, tmp_path) -> None:
    keys = tmp_path / "keys"
    assert cli("keys", "make", str(keys)).returncode == 0  # server
    assert cli("keys", "make", str(keys / "clients"), "--name", "viewer").returncode == 0
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = norface("listen", endpoint, "--until-eos", "--timeout", "120", "--out",
                       str(tmp_path / "got.jsonl"), "--curve-server-key",
                       str(keys / "server.key"), "--curve-secret",
                       str(keys / "clients" / "viewer.key_secret"), stderr=subprocess.PIPE)
    try:
        res = cli("run", str(media_dir / "single_face.jpg"), *model_args, "--zmq", endpoint,
                  "--wait-subscribers", "1", "--curve-secret", str(keys / "server.key_secret"),
                  "--curve-clients", str(keys / "clients"))
        assert listener.wait(timeout=60) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
    assert res.returncode == 0, res.stderr
    assert [m["type"] for m in jsonl(tmp_path / "got.jsonl")] == ["frame", "eos"]


@pytest.mark.parametrize("fault,named", [
    ("tampered classifier", "classifier.onnx"),
    ("truncated weights", "weights.safetensors"),
    ("img_size 32768", "config.json"),
    ("malformed config", "config.json"),
])
def test_damaged_model_files_exit_2_naming_the_file(tiny_model_dir, landmarker_path, media_dir,
                                                    tmp_path, fault, named) -> None:
    import shutil

    d = tmp_path / "set"
    shutil.copytree(tiny_model_dir, d)
    backend = "onnxruntime"
    if fault == "tampered classifier":
        data = bytearray((d / "classifier.onnx").read_bytes())
        mid = len(data) // 2
        data[mid:mid + 256] = bytes(b ^ 0x5A for b in data[mid:mid + 256])
        (d / "classifier.onnx").write_bytes(bytes(data))
    elif fault == "truncated weights":
        w = d / "weights.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
        (d / "manifest.json").unlink()  # so the weights reach the torch backend's reader
        backend = "torch"
    else:
        (d / "manifest.json").unlink()  # a set from before manifests: its config is checked
        text = (d / "config.json").read_text()
        (d / "config.json").write_text(text.replace('"img_size": 112', '"img_size": 32768')
                                       if fault == "img_size 32768" else text[:200])
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(d), "--landmarker",
              str(landmarker_path), "--zmq", "none", "--backend", backend, timeout=120)
    assert res.returncode == 2, res.stderr
    assert str(d / named) in res.stderr and "Traceback" not in res.stderr


def test_a_model_set_from_before_manifests_loads_with_a_warning(tiny_model_dir, landmarker_path,
                                                                media_dir, tmp_path) -> None:
    import shutil

    d = tmp_path / "old"
    shutil.copytree(tiny_model_dir, d)
    (d / "manifest.json").unlink()
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(d), "--landmarker",
              str(landmarker_path), "--zmq", "none", timeout=120)
    assert res.returncode == 0, res.stderr
    assert "has no manifest.json (written before manifests existed)" in res.stderr
    assert cli("models", "manifest", str(d)).returncode == 0
    verify = cli("models", "verify", str(d))
    assert verify.returncode == 0 and "every file matches its manifest" in verify.stdout
