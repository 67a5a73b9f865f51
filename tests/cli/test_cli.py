"""The command line, run as a user runs it: separate processes, real sockets, real files."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time

import av
import pytest
from cli_helpers import free_port


def cli(*args: str, timeout: float = 240, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_run_publishes_every_frame_to_a_subscriber_in_another_process(
        tiny_model_dir, landmarker_path, media_dir, tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    received = tmp_path / "received.jsonl"
    listener = subprocess.Popen(
        [sys.executable, "-m", "norface_rt", "listen", endpoint, "--until-eos", "--out",
         str(received), "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res = cli("run", str(media_dir / "single_face.mp4"), "--model-dir", str(tiny_model_dir),
                  "--landmarker", str(landmarker_path), "--zmq", endpoint, "--wait-subscribers", "1",
                  "--jsonl", str(tmp_path / "out.jsonl"), "--csv", str(tmp_path / "new" / "out.csv"),
                  "--overlay", str(tmp_path / "overlay.mp4"), "--stats-json",
                  str(tmp_path / "stats.json"), "--no-progress")
        assert res.returncode == 0, res.stderr
        assert "UNTRAINED" in res.stderr
        out, err = listener.communicate(timeout=120)
        assert listener.returncode == 0, err
    finally:
        if listener.poll() is None:
            listener.kill()
    msgs = [json.loads(line) for line in received.read_text().splitlines()]
    frames = [m for m in msgs if m["type"] == "frame"]
    assert [m["frame_index"] for m in frames] == list(range(72))
    assert msgs[-1]["type"] == "eos" and msgs[-1]["error"] is None

    local = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [m["frame_index"] for m in local if m["type"] == "frame"] == list(range(72))
    with open(tmp_path / "new" / "out.csv", newline="") as f:  # its folder was created
        rows = list(csv.DictReader(f))
    n_faces = sum(len(m["faces"]) for m in frames)
    assert len(rows) == n_faces > 60
    assert {"frame", "face_id", "AU01_r", "AU12_c", "emotion_happy"} <= set(rows[0])
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 72
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames"] == 72 and "latency" in stats["stages"]


def test_missing_model_is_a_clear_error(landmarker_path, media_dir, tmp_path):
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(tmp_path / "none"),
              "--landmarker", str(landmarker_path), "--zmq", "none", timeout=60)
    assert res.returncode == 2
    assert "Looked in" in res.stderr and str(tmp_path / "none") in res.stderr


def test_missing_model_is_reported_before_waiting_for_subscribers(landmarker_path, media_dir,
                                                                  tmp_path):
    # --wait-subscribers waits only once the model is loaded: nobody subscribes here, so a wait
    # before resolving the model would take the whole --wait-timeout.
    t0 = time.monotonic()
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(tmp_path / "none"),
              "--landmarker", str(landmarker_path), "--zmq", f"tcp://127.0.0.1:{free_port()}",
              "--wait-subscribers", "1", "--wait-timeout", "60", timeout=50)
    assert res.returncode == 2 and "Looked in" in res.stderr
    assert time.monotonic() - t0 < 40


def test_the_removed_fused_flag_is_an_unknown_option(media_dir):
    res = cli("run", str(media_dir / "single_face.jpg"), "--fused", timeout=60)
    assert res.returncode == 2 and "unrecognized arguments: --fused" in res.stderr
    assert len(res.stderr.splitlines()) == 2 and "Traceback" not in res.stderr


def test_missing_landmarker_is_a_clear_error(tiny_model_dir, media_dir, tmp_path):
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(tmp_path / "x.task"), "--zmq", "none", timeout=60)
    assert res.returncode == 2 and "landmarker" in res.stderr.lower()


def test_missing_input_file_is_a_clear_error(tiny_model_dir, landmarker_path, tmp_path):
    res = cli("run", str(tmp_path / "missing.mp4"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(landmarker_path), "--zmq", "none", timeout=60)
    assert res.returncode == 2 and "missing.mp4" in res.stderr


@pytest.mark.parametrize("args", [["--max-faces", "0"], ["--max-batch", "-3"],
                                  ["--stats-interval", "nan"], ["--threads", "many"]])
def test_absurd_arguments_exit_2(args, media_dir):
    res = cli("run", str(media_dir / "single_face.jpg"), *args, timeout=60)
    assert res.returncode == 2 and args[0] in res.stderr


def test_wildcard_bind_needs_allow_remote(tiny_model_dir, landmarker_path, media_dir):
    res = cli("run", str(media_dir / "single_face.jpg"), "--model-dir", str(tiny_model_dir),
              "--landmarker", str(landmarker_path), "--zmq", f"tcp://*:{free_port()}", timeout=60)
    assert res.returncode == 2 and "allow" in res.stderr.lower()


def test_models_info_and_init(tmp_path):
    res = cli("models", "init-untrained", str(tmp_path / "m"), "--size", "tiny", timeout=120)
    assert res.returncode == 0, res.stderr
    info = cli("models", "info", str(tmp_path / "m"), timeout=60)
    assert info.returncode == 0 and '"trained": false' in info.stdout


@pytest.mark.parametrize("seed", [0, 1])  # seed 0: a corrupt packet; seed 1: packets silently lost
def test_corrupt_file_exits_1_after_delivering_frames_when_strict(tiny_model_dir, landmarker_path,
                                                                   media_dir, tmp_path, seed):
    with av.open(str(media_dir / "single_face.mp4")) as src, \
            av.open(str(tmp_path / "full.ts"), "w", format="mpegts") as dst:
        vout = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
    data = (tmp_path / "full.ts").read_bytes()
    bad = bytearray(data)
    mid = len(bad) // 2
    bad[mid:mid + 20000] = random.Random(seed).randbytes(20000)  # damage in the middle, intact tail
    (tmp_path / "bad.ts").write_bytes(bytes(bad))
    res = cli("run", str(tmp_path / "bad.ts"), "--model-dir", str(tiny_model_dir), "--landmarker",
              str(landmarker_path), "--zmq", "none", "--jsonl", str(tmp_path / "o.jsonl"),
              "--stop-on-decode-error")
    msgs = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    frames = [m for m in msgs if m["type"] == "frame"]
    # Either the decoder conceals the damage (all frames) or it reports it; never silent loss.
    eos = msgs[-1]
    assert eos["type"] == "eos"
    assert [m["frame_index"] for m in frames] == list(range(len(frames)))
    if len(frames) < 72:
        assert eos["error"], "frames were lost without an error"
        assert res.returncode == 1
