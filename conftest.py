"""Fixtures shared by tests/ and benchmarks/: where the data beside the repository lives.

Third-party data is read from ``$NORFACE_RT_SHARED`` (default ``<repo>/../shared``) and never
committed. A missing file skips the test with the path it looked for, so the reason is visible.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent


def _shared_root() -> Path:
    return Path(os.environ.get("NORFACE_RT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"shared data directory not found: {root} (set NORFACE_RT_SHARED)")
    return root


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    d = shared_dir / "media"
    if not d.is_dir():
        pytest.skip(f"test media not found: {d}")
    return d


@pytest.fixture(scope="session")
def landmarker_path(shared_dir: Path) -> Path:
    p = shared_dir / "models" / "face_landmarker_v2_with_blendshapes.task"
    if not p.is_file():
        pytest.skip(f"MediaPipe face landmarker not found: {p}")
    return p


# --------------------------------------------------------------------------- Triton
@pytest.fixture(scope="session")
def triton_env():  # -> norface_rt.serving.env.ServerEnv
    """The Triton server's own environment; tests that need a server skip (with the command that
    makes it) where it has not been set up. CI's .ci/run sets it up before the tests."""
    from norface_rt.serving.env import ServerEnv, ServerEnvMissing

    try:
        return ServerEnv.load()
    except ServerEnvMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def start_triton(triton_env):  # noqa: ANN001, ANN201
    """A function: write a python-platform repository with ``model_sets`` (ensemble name ->
    model set) under ``root`` and start a server for it on loopback (free ports unless given);
    the caller stops it."""
    from norface_rt.serving.repository import RepositoryOptions, write_repository
    from norface_rt.serving.server import TritonServer

    def start(root: Path, model_sets: dict[str, Path], *, ports: dict[str, int] | None = None,
              **repo_options):  # noqa: ANN003, ANN202
        repo = root / "repo"
        if not repo.is_dir():
            for name, model_dir in model_sets.items():
                opts = RepositoryOptions(platform="python", name=name,
                                         **{"threads": 1, **repo_options})
                write_repository(repo, model_dir, opts)
        return TritonServer(repo, triton_env, log_path=root / "tritonserver.log",
                            **(ports or {})).start(timeout=180)

    return start


# --------------------------------------------------------------------------- artifacts, X server
@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    """Where tests leave pictures for people to look at (screenshots of the live views):
    ``$NORFACE_RT_TEST_ARTIFACTS``, default ``<repo>/test-artifacts`` (not committed)."""
    d = Path(os.environ.get("NORFACE_RT_TEST_ARTIFACTS", REPO / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def xvfb_display():  # -> str, e.g. ":5"
    """A real X server (Debian's ``xvfb``, installed by .ci/install-test-deps.sh) on a free
    display number, for the session; skipped with the install command where it is missing."""
    import shutil
    import subprocess

    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb not found: `apt-get install xvfb` (.ci/install-test-deps.sh does)")
    read_fd, write_fd = os.pipe()
    # -noreset: by default the server resets when its last client leaves (a run's window
    # closing), and a test connecting meanwhile (a screenshot, the next run) is refused.
    proc = subprocess.Popen([binary, "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as r:
            number = r.readline().strip().decode()  # written once the server accepts clients
        if not number.isdigit():
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            pytest.skip(f"Xvfb did not start: {err.strip()[-300:]}")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
