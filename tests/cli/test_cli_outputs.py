"""The command line's outputs and manners, run as a user runs it: which sockets a run opens,
progress, native log noise, help texts, the --max-faces warning, offline downloads, listen."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from norface_rt.cli import build_parser
from norface_rt.cli.native_logs import NATIVE_NOISE
from norface_rt.cli.progress import Progress, total_frames
from norface_rt.cli.run import zmq_endpoint
from norface_rt.protocol import DEFAULT_ENDPOINT


def cli(*args: str, timeout: float = 240, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def model_args(tiny_model_dir: Path, landmarker_path: Path) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path)]


@pytest.fixture
def port_5556_held():
    """Another process really bound to the default endpoint's port for the test's duration."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import socket, sys, time\n"
         "s = socket.socket()\n"
         "s.bind(('127.0.0.1', 5556))\n"
         "s.listen()\n"
         "print('bound', flush=True)\n"
         "time.sleep(300)\n"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline().strip()
    if line != "bound":
        holder.kill()
        err = holder.stderr.read()
        pytest.skip(f"port 5556 is already in use on this machine: {err.strip()[-200:]}")
    yield holder
    holder.kill()
    holder.wait(10)


def test_a_file_only_run_opens_no_socket_while_another_process_holds_5556(
        port_5556_held, tiny_model_dir, landmarker_path, media_dir, tmp_path) -> None:
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--jsonl", str(tmp_path / "r.jsonl"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "publishing on" not in res.stderr
    assert [json.loads(x)["type"] for x in (tmp_path / "r.jsonl").read_text().splitlines()] == \
        ["frame", "eos"]
    # Without any output flag the run still publishes on the default endpoint: here that port
    # is taken, so it says so (and only the bind fails, cleanly).
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--no-progress")
    assert res.returncode == 2 and f"cannot bind ZeroMQ endpoint '{DEFAULT_ENDPOINT}'" in res.stderr
    assert "Traceback" not in res.stderr
    # --zmq none keeps working: no socket, no output, success
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--zmq", "none", "--no-progress")
    assert res.returncode == 0 and "publishing on" not in res.stderr


def test_which_endpoint_a_run_publishes_on() -> None:
    assert zmq_endpoint(None, files=False) == DEFAULT_ENDPOINT
    assert zmq_endpoint(None, files=True) is None
    assert zmq_endpoint("tcp://127.0.0.1:6000", files=True) == "tcp://127.0.0.1:6000"
    assert zmq_endpoint("none", files=False) is None and zmq_endpoint("NONE", files=True) is None


def test_progress_lines_quiet_native_logs_and_verbose(tiny_model_dir, landmarker_path, media_dir,
                                                      tmp_path) -> None:
    res = cli("run", str(media_dir / "single_face.mp4"), *model_args(tiny_model_dir, landmarker_path),
              "--jsonl", str(tmp_path / "r.jsonl"), "--progress-interval", "0.5", "--landmarks",
              "--smooth", "0.2")
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.startswith("norface-rt: progress")]
    assert lines, res.stderr  # stderr is a pipe here: periodic lines, not a bar
    assert lines[-1].startswith("norface-rt: progress 72/72 frames (100.0%)")
    assert all("/72 frames (" in x and "ETA" in x for x in lines)
    # MediaPipe / TFLite lines are gone, our own summary is there
    assert not [x for x in res.stderr.splitlines() if NATIVE_NOISE.match(x.encode())]
    assert "INFO: Created TensorFlow Lite" not in res.stderr and "W0000" not in res.stderr
    assert "72 frames" in res.stderr
    frame = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[10])
    assert len(frame["faces"][0]["landmarks"]) == 478
    verbose = cli("run", str(media_dir / "single_face.jpg"),
                  *model_args(tiny_model_dir, landmarker_path), "--zmq", "none", "--verbose")
    assert verbose.returncode == 0
    assert [x for x in verbose.stderr.splitlines() if NATIVE_NOISE.match(x.encode())]


def test_image_folder_progress_knows_its_total(tiny_model_dir, landmarker_path, media_dir,
                                               tmp_path) -> None:
    import shutil

    for name in ("single_face.jpg", "astronaut.png", "grace_hopper_512x512.jpg"):
        shutil.copy(media_dir / name, tmp_path / name)
    res = cli("run", str(tmp_path), *model_args(tiny_model_dir, landmarker_path), "--zmq", "none",
              "--progress-interval", "0.2")
    assert res.returncode == 0, res.stderr
    assert "norface-rt: progress 3/3 frames (100.0%)" in res.stderr


def test_progress_unit() -> None:
    import io

    assert total_frames([72, 3]) == 75 and total_frames([72, None]) is None
    assert total_frames([]) is None
    out = io.StringIO()
    p = Progress(100, out, interval=1000.0, tty=False)
    for _ in range(25):
        p.update()
    assert p.line().startswith("norface-rt: progress 25/100 frames (25.0%), ")
    p.close()
    assert out.getvalue().startswith("norface-rt: progress 25/100 frames (25.0%)")
    live = Progress(None, io.StringIO(), tty=False)
    live.update(3)
    assert "progress 3 frames," in live.line() and "ETA" not in live.line()
    with pytest.raises(ValueError, match="--progress-interval"):
        Progress(None, io.StringIO(), interval=0, tty=False)


def test_native_noise_pattern_keeps_errors() -> None:
    noise = [b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
             b"WARNING: Logging before InitGoogle() is written to STDERR\n",
             b"W0000 00:00:1796041744.334663   29161 face_landmarker_graph.cc:181] Sets x\n",
             b"I0000 00:00:1796041744.334663   29161 gl_context.cc:357] GL version\n"]
    kept = [b"E0000 00:00:1796041744.334663   29161 calculator.cc:12] real failure\n",
            b"F0000 00:00:1796041744.334663   29161 check.cc:1] Check failed\n",
            b"norface-rt: error: something\n", b"2026-11-30 12:00:00 WARNING norface_rt: x\n",
            b"Traceback (most recent call last):\n"]
    assert all(NATIVE_NOISE.match(x) for x in noise)
    assert not any(NATIVE_NOISE.match(x) for x in kept)


def _all_parsers(parser: argparse.ArgumentParser, path: str = "norface-rt"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help_and_states_its_default() -> None:
    missing, no_default = [], []
    for path, parser in _all_parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = f"{path} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(name)
                continue
            d = action.default
            meaningful = not (d is None or d is False or d is argparse.SUPPRESS)
            if meaningful and "default" not in formatter._expand_help(action).lower():
                no_default.append(name)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help hides the default: {no_default}"
    help_text = cli("run", "--help", timeout=60).stdout
    assert "--csv-style {default,openface}" in help_text and "(default: 4)" in help_text


def test_max_faces_cut_is_warned_and_counted(tiny_model_dir, landmarker_path, media_dir,
                                             tmp_path) -> None:
    res = cli("run", str(media_dir / "multi_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--max-faces", "4", "--jsonl", str(tmp_path / "r.jsonl"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "more face(s) than --max-faces 4" in res.stderr
    frame = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert len(frame["faces"]) == 4 and frame["faces_cut"] >= 1


def test_models_download_offline_is_one_line(tmp_path) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port: like being offline
    res = cli("models", "download", "--dest", str(tmp_path / "m"), timeout=120,
              env={"https_proxy": dead, "HTTPS_PROXY": dead, "no_proxy": "", "NO_PROXY": ""})
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("norface-rt: error: could not download "), err
    assert "--landmarker" in err[0] and "Traceback" not in res.stderr
    assert not list((tmp_path / "m").glob("*.part"))  # nothing half-written is left


def test_listen_says_it_is_waiting() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = cli("listen", f"tcp://127.0.0.1:{port}", "--timeout", "1", timeout=60)
    assert res.returncode == 1
    assert f"waiting for messages on tcp://127.0.0.1:{port} (topics: all" in res.stderr
    assert time.monotonic() - t0 < 30


def test_quiet_native_logs_filters_descriptor_2_only(capfd) -> None:
    import logging

    from norface_rt.cli.native_logs import quiet_native_logs

    with quiet_native_logs():
        os.write(2, b"W0000 00:00:1796041744.334663   29161 x.cc:1] native noise\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1796041744.334663   29161 x.cc:1] native error kept\n")
        print("python line", file=sys.stderr)
        handler = logging.StreamHandler(sys.stderr)
        logging.getLogger().addHandler(handler)
    try:
        assert handler.stream is sys.stderr  # re-pointed at the real stderr on the way out
    finally:
        logging.getLogger().removeHandler(handler)
    err = capfd.readouterr().err
    assert "native noise" not in err and "TensorFlow Lite" not in err
    assert "native error kept" in err and "python line" in err
    with quiet_native_logs(enabled=False):
        os.write(2, b"W0000 00:00:1796041744.334663   29161 x.cc:1] verbose keeps it\n")
    assert "verbose keeps it" in capfd.readouterr().err
