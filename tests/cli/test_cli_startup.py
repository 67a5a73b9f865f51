"""Start-up in the right order, injected for real against `norface-rt run`: a FIFO nobody opens,
outputs that would share a file, a directory or /dev/null as an output, reserved and duplicate
stream ids, impossible ports, a busy metrics port, a NATS port that refuses and a NATS peer that
speaks nonsense, signals during model loading and SIGHUP, and a stderr whose reader has gone.

Every refusal is exit 2 with one line naming the option, without a traceback, and leaves no
output file behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import free_port, norface

pytestmark = pytest.mark.timeout(180)


def cli(*args: str, timeout: float = 120, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def model_args(tiny_model_dir: Path, landmarker_path: Path) -> list[str]:
    return ["--model-dir", str(tiny_model_dir), "--landmarker", str(landmarker_path),
            "--no-progress"]


def assert_refused(res: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    for fragment in fragments:
        assert fragment in res.stderr, res.stderr


def test_a_fifo_nobody_opens_is_refused_within_seconds_and_nothing_is_left(
        model_args, media_dir, tmp_path) -> None:
    """Issue 22, point 1: a run whose --jsonl is a FIFO without a reader hung at start-up."""
    out = tmp_path / "out"
    out.mkdir()
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args, "--jsonl", str(fifo),
              "--csv", str(out / "r.csv"), timeout=90)
    assert_refused(res, f"output FIFO {fifo} has no reader")
    assert files_in(out) == []  # the CSV is opened after the JSONL: never created


def test_a_fifo_with_a_reader_receives_every_message(model_args, media_dir, tmp_path) -> None:
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo).read().splitlines()),
                              daemon=True)
    reader.start()
    res = cli("run", str(media_dir / "single_face.jpg"), *model_args, "--jsonl", str(fifo))
    reader.join(30)
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["type"] for line in got] == ["frame", "eos"]


@pytest.mark.parametrize("case", [
    "stream ids made the same file", "one path for two outputs", "a link to another output",
    "stats over the jsonl"])
def test_outputs_that_would_share_a_file_are_refused_before_any_is_opened(
        model_args, media_dir, tmp_path, case) -> None:
    """Point 2: `--stream-id "cam/1" --stream-id "cam 1"` wrote both streams into one overlay
    and one CSV (72 of 170 frames survived), and `--jsonl x --csv x` mixed JSON and CSV."""
    out = tmp_path / "out"
    out.mkdir()
    image = str(media_dir / "single_face.jpg")
    if case == "stream ids made the same file":
        args = [image, image, "--stream-id", "cam/1", "--stream-id", "cam 1",
                "--overlay", str(out / "o.mp4"), "--csv", str(out / "r.csv"),
                "--csv-style", "openface"]
        said = ["r-cam_1.csv is also written by --csv (stream 'cam/1')"]
    elif case == "one path for two outputs":
        args = [image, "--jsonl", str(out / "x.txt"), "--csv", str(out / "x.txt")]
        said = ["--csv:", "x.txt is also written by --jsonl"]
    elif case == "a link to another output":
        (tmp_path / "link.csv").symlink_to(out / "x.jsonl")
        args = [image, "--jsonl", str(out / "x.jsonl"), "--csv", str(tmp_path / "link.csv")]
        said = ["is also written by --jsonl"]
    else:
        args = [image, "--jsonl", str(out / "x.jsonl"), "--stats-json", str(out / "x.jsonl")]
        said = ["--stats-json:", "is also written by --jsonl"]
    res = cli("run", *args, *model_args)
    assert_refused(res, *said)
    assert files_in(out) == []


@pytest.mark.parametrize("case", [
    "directory", "under a file", "overlay to /dev/null", "reserved stream id", "empty stream id",
    "duplicate stream id", "negative wait", "port 99999", "port 0", "metrics port 70000",
    "push-ack without push"])
def test_impossible_arguments_exit_2_before_anything_is_opened(
        model_args, media_dir, tmp_path, case) -> None:
    """Points 3, 4, 13, 15, 16: a directory as output (traceback, exit 1), `--stream-id _stats`
    (crash at end of stream), `--overlay /dev/null` (a traceback per frame),
    `--wait-subscribers -5`, `--zmq tcp://127.0.0.1:99999` (bound 34463), an invalid metrics
    port or a duplicate stream id (exit 2, but empty output files left behind)."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "plain").write_text("a file")
    image = str(media_dir / "single_face.jpg")
    files = ["--jsonl", str(out / "r.jsonl"), "--csv", str(out / "r.csv")]
    args, said = {
        "directory": ([image, "--jsonl", str(out)], ["--jsonl: expected a file to write, got "
                                                     "the directory"]),
        "under a file": ([image, *files[2:], "--jsonl", str(tmp_path / "plain" / "r.jsonl")],
                         ["--jsonl:", "plain is a file, not a directory"]),
        "overlay to /dev/null": ([image, *files, "--overlay", "/dev/null"],
                                 ["--overlay: expected a regular file", "character device"]),
        "reserved stream id": ([image, *files, "--stream-id", "_stats"],
                               ["--stream-id: ids starting with '_' are reserved"]),
        "empty stream id": ([image, *files, "--stream-id", ""],
                            ["--stream-id: expected a non-empty stream id"]),
        "duplicate stream id": ([image, image, *files, "--stream-id", "a", "--stream-id", "a"],
                                ["--stream-id: expected a different id for each source"]),
        "negative wait": ([image, *files, "--wait-subscribers", "-5"],
                          ["--wait-subscribers must be >= 0, got -5"]),
        "port 99999": ([image, *files, "--zmq", "tcp://127.0.0.1:99999"],
                       ["--zmq: expected a port in 1..65535", "'99999'"]),
        "port 0": ([image, *files, "--push", "tcp://127.0.0.1:0"],
                   ["--push: expected a port in 1..65535"]),
        "metrics port 70000": ([image, *files, "--metrics-port", "70000"],
                               ["--metrics-port must be in 1..65535, got 70000"]),
        "push-ack without push": ([image, *files, "--push-ack", "tcp://127.0.0.1:5558"],
                                  ["--push-ack needs --push"]),
    }[case]
    res = cli("run", *args, *model_args)
    assert_refused(res, *said)
    assert files_in(out) == []


def test_a_busy_metrics_port_leaves_no_output_files(model_args, media_dir, tmp_path) -> None:
    """Point 16: the busy port was found after the files had been created."""
    out = tmp_path / "out"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = cli("run", str(media_dir / "single_face.jpg"), *model_args, "--jsonl",
                  str(out / "r.jsonl"), "--csv", str(out / "r.csv"), "--overlay",
                  str(out / "o.mp4"), "--metrics-port", str(port))
    assert_refused(res, f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}")
    assert not out.exists() or files_in(out) == []


@pytest.fixture
def nonsense_server() -> Iterator[int]:
    """A TCP server that answers every connection with an HTTP error: not NATS."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(5)
        srv.close()


@pytest.mark.parametrize("peer", ["refusing", "not NATS"])
def test_an_unusable_nats_server_is_one_clean_line_and_no_files(
        model_args, media_dir, tmp_path, peer, request) -> None:
    """Point 18: an unreachable NATS server took 17 s and 59 tracebacks and left an empty JSONL."""
    pytest.importorskip("nats", reason="the 'nats' extra (nats-py) is not installed")
    port = free_port() if peer == "refusing" else request.getfixturevalue("nonsense_server")
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = norface("run", str(media_dir / "single_face.jpg"), *model_args, "--nats",
                   f"nats://127.0.0.1:{port}", "--jsonl", str(out / "r.jsonl"),
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert_refused(res, f"--nats nats://127.0.0.1:{port}: cannot use JetStream stream 'NORFACE': "
                        "no NATS server answered within 5 s (")
    assert err.count("\n") <= 3, err  # one line (and native log lines, if any)
    assert not out.exists() or files_in(out) == []
    # model loading included; the NATS part is bounded by its 5 s connect budget
    assert time.monotonic() - t0 < 60


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` installed (SigCgt in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1],
               16)
    return bool(mask & (1 << (int(sig) - 1)))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_model_loading_ends_the_run_through_its_handler(
        model_args, media_dir, tmp_path, sig, code) -> None:
    """Point 17: SIGTERM during model loading, and any SIGHUP (a terminal that closes), killed the
    process at once by the default action. The handler is in place from the run's first
    instruction: the signal is sent the moment it is (the model has not loaded yet), and the
    run leaves through it, with its exit status and nothing opened left behind."""
    out = tmp_path / "out"
    proc = norface("run", str(media_dir / "single_face.mp4"), *model_args, "--jsonl",
                   str(out / "r.jsonl"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _catches(proc.pid, sig):
            assert proc.poll() is None, "the run ended before it caught the signal"
            assert time.monotonic() < deadline, f"the run never installed a {sig.name} handler"
            time.sleep(0.005)
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == code, err
    assert f"{sig.name} during start-up: nothing was analysed" in err
    assert "Traceback" not in err
    assert not out.exists() or files_in(out) == []


def test_a_stderr_whose_reader_is_gone_never_ends_the_run(model_args, media_dir,
                                                         tmp_path) -> None:
    """Point 9: with `... 2>&1 >/dev/null | head -1` the run died at its next progress line (58
    of 472 frames, no end of stream, exit 1). Here the reading end of stderr is closed before
    the run writes anything, and progress lines are asked for every 50 ms."""
    proc = norface("run", str(media_dir / "single_face.mp4"), *model_args[:-1],
                   "--progress-interval", "0.05", "--jsonl", str(tmp_path / "r.jsonl"),
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.close()  # the reader goes away: every write to stderr now fails (EPIPE)
    try:
        rc = proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0
    msgs = jsonl(tmp_path / "r.jsonl")
    assert [m["frame_index"] for m in msgs if m["type"] == "frame"] == list(range(72))
    assert msgs[-1]["type"] == "eos" and msgs[-1]["error"] is None


def test_a_signal_while_the_options_are_read_leaves_through_the_handler(
        model_args, media_dir, tmp_path, monkeypatch, capsys) -> None:
    """Seen once in CI: a SIGHUP that came while `run` read its options (after the handler was
    installed, before the start-up's try) left as a traceback and exit 1. The signal is raised
    here, for real, at that moment: the run must leave through its handler, exit 129."""
    import norface_rt.sources.factory as factory
    from norface_rt.cli import main

    real = factory.expand_sources

    def expand_then_hang_up(sources):  # type: ignore[no-untyped-def]
        out = real(sources)
        signal.raise_signal(signal.SIGHUP)
        return out

    monkeypatch.setattr(factory, "expand_sources", expand_then_hang_up)
    before = signal.getsignal(signal.SIGHUP)
    rc = main(["run", str(media_dir / "single_face.mp4"), *model_args,
               "--jsonl", str(tmp_path / "r.jsonl")])
    err = capsys.readouterr().err
    assert rc == 129, err
    assert "SIGHUP during start-up: nothing was analysed" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGHUP) == before  # the run's handlers are gone again
    assert not (tmp_path / "r.jsonl").exists()
