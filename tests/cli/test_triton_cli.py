"""Edges on Triton as users run them: ``norface-rt run --backend triton`` processes against a real
Triton server on loopback (results, batching across processes, a server crash mid-run), and
``norface-rt triton-repo`` / ``triton-server``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from norface_rt.paths import packaged_model_dir
from norface_rt.serving.server import free_port

TOL = 1e-5


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "norface_rt", *args], capture_output=True,
                          text=True, timeout=timeout)


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "norface_rt", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def frames(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [m for m in map(json.loads, lines) if m["type"] == "frame"]


def max_diff(a: list[dict], b: list[dict]) -> float:
    d = 0.0
    for x, y in zip(a, b):
        assert len(x["faces"]) == len(y["faces"])
        for f, g in zip(x["faces"], y["faces"]):
            for k in ("au_occurrence", "au_intensity", "emotions"):
                d = max(d, max(abs(f[k][n] - g[k][n]) for n in f[k]))
    return d


def run_args(media: Path, landmarker: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(media), "--landmarker", str(landmarker), "--jsonl", str(out), "--zmq", "none",
            "--no-progress", *extra]


def test_a_run_on_triton_equals_the_in_process_run(triton_server, media_dir, landmarker_path,
                                                   tmp_path) -> None:
    media = media_dir / "single_face.mp4"
    res = cli(*run_args(media, landmarker_path, tmp_path / "t.jsonl", "--backend", "triton",
                        "--triton-url", triton_server.grpc_url))
    assert res.returncode == 0, res.stderr
    res = cli(*run_args(media, landmarker_path, tmp_path / "o.jsonl"))
    assert res.returncode == 0, res.stderr
    t, o = frames(tmp_path / "t.jsonl"), frames(tmp_path / "o.jsonl")
    assert [m["frame_index"] for m in t] == list(range(72)) == [m["frame_index"] for m in o]
    assert sum(len(m["faces"]) for m in t) == 72 and not any(m["error"] for m in t)
    assert max_diff(t, o) <= TOL
    assert t[0]["faces"][0]["model_id"] == o[0]["faces"][0]["model_id"]


def _stats(server, model: str) -> tuple[int, int, int]:  # noqa: ANN001
    """(requests, executions, faces) of ``model`` so far, from Triton's statistics extension."""
    s = server.statistics(model)["model_stats"][0]
    return (int(s["inference_stats"]["success"]["count"]), int(s["execution_count"]),
            int(s["inference_count"]))


def test_two_edge_processes_share_one_server_and_their_requests_are_batched_together(
        triton_server, media_dir, landmarker_path, tmp_path) -> None:
    before = _stats(triton_server, "norface_normalizer")
    # one face per request (--max-batch 1) and one request in flight per process: any execution
    # of more than one request merged requests of the two processes
    procs = [popen(*run_args(media_dir / "single_face.mp4", landmarker_path, tmp_path / f"{i}.jsonl",
                             "--backend", "triton", "--triton-url", triton_server.grpc_url,
                             "--max-batch", "1", "--stream-id", f"edge{i}"))
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    for i in range(2):
        got = frames(tmp_path / f"{i}.jsonl")
        assert [m["frame_index"] for m in got] == list(range(72))
        assert all(len(m["faces"]) == 1 and m["error"] is None for m in got)
    after = _stats(triton_server, "norface_normalizer")
    requests, executions, faces = (a - b for a, b in zip(after, before))
    assert requests == 2 * 72 + 2 and faces == requests  # 72 frames and one warm-up each
    assert executions < requests, (f"{requests} requests ran in {executions} executions: the "
                                   "dynamic batcher merged none")
    batches = triton_server.statistics("norface_normalizer")["model_stats"][0]["batch_stats"]
    assert any(int(b["batch_size"]) >= 2 for b in batches)


@pytest.mark.slow
def test_a_server_killed_and_restarted_mid_run(start_triton, media_dir, landmarker_path,
                                               tmp_path) -> None:
    """SIGKILL the server while a file run and a live run use it, start it again on the same
    ports: the file run completes with every frame (back-pressure, retries), the live run keeps
    going and shows the gap (frames dropped at its source while the server was away)."""
    ports = {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    server = start_triton(tmp_path, {"norface": packaged_model_dir()}, ports=ports)
    try:
        url = server.grpc_url
        file_out, live_out = tmp_path / "file.jsonl", tmp_path / "live.jsonl"
        common = ("--backend", "triton", "--triton-url", url, "--triton-retry", "60")
        file_run = popen(*run_args(media_dir / "face_noface.mov", landmarker_path, file_out,
                                   *common, "--max-batch", "1"))
        live_run = popen(*run_args(media_dir / "single_face.mp4", landmarker_path, live_out,
                                   *common, "--realtime", "--loop", "--queue-size", "2"))
        try:
            deadline = time.monotonic() + 120
            while len(frames(file_out)) < 5 or len(frames(live_out)) < 5:
                assert time.monotonic() < deadline, "the runs produced no frames"
                assert file_run.poll() is None, file_run.communicate()[1]
                time.sleep(0.05)
            server.kill()
            killed_at = time.time()
            time.sleep(2.0)
            server = start_triton(tmp_path, {}, ports=ports)
            restarted_at = time.time()
            _, err = file_run.communicate(timeout=240)
            assert file_run.returncode == 0, err
            deadline = time.monotonic() + 60
            while not any(m["capture_time"] > restarted_at + 1 for m in frames(live_out)):
                assert time.monotonic() < deadline, "the live run never recovered"
                time.sleep(0.1)
            live_run.send_signal(signal.SIGTERM)
            _, live_err = live_run.communicate(timeout=60)
        finally:
            for p in (file_run, live_run):
                if p.poll() is None:
                    p.kill()
        got = frames(file_out)
        assert [m["frame_index"] for m in got] == list(range(169)), "frames lost"
        assert not any(m["error"] for m in got), [m["error"] for m in got if m["error"]][:2]
        assert sum(len(m["faces"]) for m in got) > 40
        assert "answers again" in err  # the outage was seen and survived, not avoided
        live = frames(live_out)
        assert live_run.returncode in (0, 143), live_err  # SIGTERM: 143
        assert not any(m["error"] for m in live)
        # the gap: the frames of the outage (>= 2 s at 30 frames/s) were dropped at the live
        # source, and counted ...
        before = [m for m in live if m["capture_time"] < killed_at]
        after = [m for m in live if m["capture_time"] > restarted_at + 1]
        assert before and after
        assert after[0]["dropped_frames"] - before[-1]["dropped_frames"] >= 30
        # ... and the seq numbers stay contiguous: the gap is in the source's frames, not lost
        assert [m["seq"] for m in live] == list(range(len(live)))
        assert all(m["faces"] for m in after)
    finally:
        server.stop()


def test_triton_repo_command(tmp_path) -> None:
    res = cli("triton-repo", str(tmp_path / "repo"), "--platform", "tensorrt", "--max-batch", "16",
              "--preferred-batch", "4,8,16", "--instances", "2")
    assert res.returncode == 0, res.stderr
    assert "validated against Triton's model_config.proto" in res.stdout
    assert "todo:" in res.stdout and "build_plans.sh" in res.stdout
    assert (tmp_path / "repo" / "norface_classifier" / "1" / "model.onnx").is_file()
    bad = cli("triton-repo", str(tmp_path / "r2"), "--preferred-batch", "8,x")
    assert bad.returncode == 2 and "--preferred-batch must be comma-separated integers" in bad.stderr
    missing = cli("triton-repo", str(tmp_path / "r3"), "--model-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no Norface model set" in missing.stderr
    res = cli("run", "x.mp4", "--backend", "triton")
    assert res.returncode == 2 and "--triton-url is needed with --backend triton" in res.stderr


def test_run_against_a_server_that_is_down_exits_2(media_dir, landmarker_path, tmp_path) -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    res = cli(*run_args(media_dir / "single_face.mp4", landmarker_path, tmp_path / "x.jsonl",
                        "--backend", "triton", "--triton-url", url), timeout=60)
    assert res.returncode == 2
    assert f"--triton-url {url}: Triton server not usable" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.jsonl").exists()  # outputs open only once the backend has


def test_triton_server_serve_command(triton_env, tmp_path) -> None:
    repo = tmp_path / "repo"
    assert cli("triton-repo", str(repo), "--platform", "python", "--threads", "1").returncode == 0
    grpc = free_port()
    proc = popen("triton-server", "serve", str(repo), "--grpc-port", str(grpc), "--http-port",
                 str(free_port()), "--metrics-port", str(free_port()))
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"serving {repo}: grpc://127.0.0.1:{grpc}" in line, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(p.startswith(f"norface_{proc.pid}_") for p in os.listdir("/dev/shm"))
