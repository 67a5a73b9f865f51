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
from norface_rt.cli.progress import Progress, total_frames
from norface_rt.cli.run import zmq_endpoint
from norface_rt.native_logs import NATIVE_NOISE
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
    # Without any output flag and stdout a pipe, the JSON lines on stdout are the output: no
    # socket either, so the busy port does not matter.
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--no-progress")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["type"] for x in res.stdout.splitlines()] == ["frame", "eos"]
    # Publishing there explicitly fails on the busy port, saying so (only the bind, cleanly).
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args(tiny_model_dir, landmarker_path),
              "--zmq", DEFAULT_ENDPOINT, "--no-progress")
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
    assert "--csv-style {default,openface}" in help_text and "(default: 4 for videos" in help_text


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

    from norface_rt.native_logs import quiet_native_logs

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


# ----------------------------------------------------------------------------- no silent runs

def _run_on_a_terminal(args: list[str], timeout: float = 240) -> tuple[int, str, str]:
    """``norface-rt ARGS`` with stdout on a pseudo-terminal, as a person at a terminal runs it:
    (exit status, what the terminal showed, stderr)."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "norface_rt", *args], stdout=slave,
                            stderr=subprocess.PIPE, text=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        err = proc.stderr.read() if proc.stderr else ""
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, shown.decode(errors="replace").replace("\r\n", "\n"), err


def test_a_run_without_outputs_shows_a_summary_on_the_terminal_and_says_nobody_listened(
        landmarker_path, media_dir) -> None:
    """Issue 21, point 1: results never go only to a port nobody listens to."""
    code, shown, err = _run_on_a_terminal(
        ["run", str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path)])
    assert code == 0, err
    lines = [x for x in shown.splitlines() if x.startswith("single_face ")]
    assert lines[0].startswith("single_face  0:00.0  frame 1/72  1 face: #0 "), shown
    assert lines[-1] == "single_face  ended after 72 frames", shown
    assert "no output chosen" in err and "--jsonl FILE" in err
    assert f"nobody subscribed to {DEFAULT_ENDPOINT}: its 73 message(s) reached no one" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_run_without_outputs_writes_json_lines_to_a_pipe(landmarker_path, media_dir) -> None:
    res = cli("run", str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path))
    assert res.returncode == 0, res.stderr
    msgs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [m["frame_index"] for m in msgs if m["type"] == "frame"] == list(range(72))
    assert msgs[-1]["type"] == "eos" and msgs[-1]["error"] is None
    assert "every message as a JSON line on stdout" in res.stderr
    assert "publishing on" not in res.stderr  # the pipe is the output: no socket


def test_a_publisher_nobody_subscribed_to_says_so(landmarker_path, media_dir, tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    res = cli("run", str(media_dir / "single_face.jpg"), "--landmarker", str(landmarker_path),
              "--zmq", endpoint, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert f"nobody subscribed to {endpoint}: its 2 message(s) reached no one" in res.stderr
    assert res.stdout == ""  # an output was chosen: nothing else is added


def test_quiet_and_stats(landmarker_path, media_dir, tmp_path) -> None:
    """Issue 21, point 8: one line at the end by default, the latency table only with --stats,
    nothing but problems with --quiet."""
    base = ["run", str(media_dir / "single_face.jpg"), "--landmarker", str(landmarker_path),
            "--jsonl", str(tmp_path / "r.jsonl")]
    plain = cli(*base, "--no-progress")
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.strip().splitlines() == [
        x for x in plain.stderr.strip().splitlines() if x.startswith("norface-rt: 1 frames, 1 faces")]
    assert f"-> {tmp_path / 'r.jsonl'}" in plain.stderr and "p50 ms" not in plain.stderr
    stats = cli(*base, "--no-progress", "--stats")
    assert stats.returncode == 0 and "p50 ms" in stats.stderr and "output jsonl: 2 written" in \
        stats.stderr
    quiet = cli(*base, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_run_help_lists_options_in_named_groups_without_dead_ones() -> None:
    """Issue 21, point 8: every option of `run --help` sits in a named group; --fused is gone."""
    parser = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction)).choices["run"]
    titles = [g.title for g in parser._action_groups if g._group_actions]
    assert titles == ["options", "input", "faces", "model", "outputs", "transport",
                      "live sources", "GPU", "serving"], titles
    ungrouped = [a.option_strings for a in parser._action_groups[1]._group_actions]
    assert ungrouped == [["-h", "--help"], ["-v", "--verbose"]], ungrouped
    flags = {f for a in parser._actions for f in a.option_strings}
    assert "--fused" not in flags and {"--quiet", "--stats"} <= flags
    text = parser.format_help()
    assert text.startswith("usage: norface-rt run [options] SOURCE [SOURCE ...]\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (["run", "x.mp4", "--max-facs", "3"], "(did you mean --max-faces?)"),
    (["run", "x.mp4", "--backend", "onnx"], "did you mean 'onnxruntime'?"),
    (["rn", "x.mp4"], "did you mean 'run'?"),
    (["listen", "--untill-eos"], "(did you mean --until-eos?)"),
])
def test_argument_errors_are_short_and_suggest_the_closest(argv, expected, capsys) -> None:
    from norface_rt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "error:" in err[0] and expected in err[0], err
    assert "--help` lists the options" in err[1] and not any(x.startswith("usage:") for x in err)


# ----------------------------------------------------------------------------- stills as stills

def test_an_overlay_of_a_photo_is_a_picture(landmarker_path, media_dir, tmp_path) -> None:
    """Issue 21, point 2: `--overlay out.png` on a photo used to crash in libx264 (exit 1)."""
    import cv2

    for name in ("out.png", "out.jpg", "out.webp"):
        res = cli("run", str(media_dir / "multi_face.jpg"), "--landmarker", str(landmarker_path),
                  "--overlay", str(tmp_path / name), "--quiet")
        assert res.returncode == 0 and res.stderr == "", res.stderr
        img = cv2.imread(str(tmp_path / name))
        assert img is not None and img.shape[0] == 667 and img.shape[1] > 1000  # frame + panel
    res = cli("run", str(media_dir / "multi_face.jpg"), "--landmarker", str(landmarker_path),
              "--overlay", str(tmp_path / "bare.png"), "--no-panel", "--quiet")
    assert res.returncode == 0 and cv2.imread(str(tmp_path / "bare.png")).shape == (667, 1000, 3)


def test_an_overlay_of_a_folder_is_a_picture_per_input(landmarker_path, media_dir,
                                                       tmp_path) -> None:
    import shutil

    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("single_face.jpg", "astronaut.png"):
        shutil.copy(media_dir / name, photos / name)
    res = cli("run", str(photos), "--landmarker", str(landmarker_path), "--overlay",
              str(tmp_path / "out" / "ov.jpg"), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ov-astronaut.jpg",
                                                                    "ov-single_face.jpg"]
    assert cv2.imread(str(tmp_path / "out" / "ov-astronaut.jpg")).shape[0] == 512
    res = cli("run", str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path),
              "--overlay", str(tmp_path / "v.png"), "--no-progress")
    assert res.returncode == 2 and "write --overlay FILE.mp4 for videos" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "v.png").exists()


def test_a_folder_of_videos_is_a_stream_per_video(landmarker_path, media_dir, tmp_path) -> None:
    """Issue 21, point 9: a folder of videos used to be refused ("no images in folder")."""
    import shutil

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media_dir / "single_face.mp4", videos / "a.mp4")
    shutil.copy(media_dir / "no_face.mp4", videos / "b.mp4")
    res = cli("run", str(videos), "--landmarker", str(landmarker_path), "--jsonl",
              str(tmp_path / "r.jsonl"), "--quiet")
    assert res.returncode == 0, res.stderr
    ends = [m for m in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())
            if m["type"] == "eos"]
    assert sorted((m["stream_id"], m["frames"], m["error"]) for m in ends) == [
        ("a", 72, None), ("b", 95, None)]


def test_stream_ids_for_a_folder_of_videos_count_its_videos(media_dir, tmp_path, capsys) -> None:
    """One --stream-id for a folder of two videos is refused at once, saying why (the folder is
    two streams) and which they are, instead of "expected one per source (2), got 1"."""
    import shutil

    from norface_rt.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(media_dir / "no_face.mp4", videos / "a.mp4")
    shutil.copy(media_dir / "no_face.mp4", videos / "b.mp4")
    assert main(["run", str(videos), "--stream-id", "lobby", "--zmq", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("norface-rt: error: --stream-id: a folder of videos is one stream per "
                          "video: 2 streams here (a.mp4, b.mp4)") and err.endswith("got 1"), err
