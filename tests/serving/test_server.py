"""The server environment and the launcher of the bundled tritonserver."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from norface_rt.serving.env import ENV_VAR, SETUP_COMMAND, ServerEnv, ServerEnvMissing
from norface_rt.serving.server import TritonServer


def test_a_missing_environment_names_the_setup_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ServerEnvMissing, match=f"run `{SETUP_COMMAND}`"):
        ServerEnv.load()


def test_the_server_environment_keeps_numpy_below_2_and_its_own_path(triton_env) -> None:
    site = triton_env.site_packages
    versions = [p.name for p in site.glob("numpy-*.dist-info")]
    assert versions and all(v.startswith("numpy-1.") for v in versions), versions
    env = triton_env.environ({"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere",
                              "LD_LIBRARY_PATH": "/usr/lib"})
    assert "PYTHONPATH" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(triton_env.bin_dir)
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[:2] == [str(triton_env.libpython_dir),
                                                            str(triton_env.libs_dir)]


def test_a_repository_that_fails_to_load_is_reported_with_the_log(triton_env, tmp_path) -> None:
    (tmp_path / "repo" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\n')
    server = TritonServer(tmp_path / "repo", triton_env)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="tritonserver .* before it was ready") as e:
        server.start(timeout=60)
    assert time.monotonic() - t0 < 30 and "broken/1/model.py" in str(e.value)
    assert not server.running


def test_the_session_server_is_on_loopback_and_reports_statistics(triton_server) -> None:
    assert triton_server.host == "127.0.0.1" and triton_server.ready()
    names = {m["name"] for m in triton_server.statistics()["model_stats"]}
    assert {"norface", "norface_preprocess", "norface_normalizer", "norface_classifier",
            "geo"} <= names
    assert Path(triton_server.log_path).read_text().count("READY") >= 8


def test_a_killed_server_leaves_nothing_in_dev_shm(start_triton, tmp_path) -> None:
    from norface_rt.paths import packaged_model_dir

    server = start_triton(tmp_path, {"norface": packaged_model_dir()})
    prefix = server._shm_prefix
    assert any(p.startswith(prefix) for p in os.listdir("/dev/shm"))
    server.kill()
    assert not server.running
    assert not any(p.startswith(prefix) for p in os.listdir("/dev/shm"))
