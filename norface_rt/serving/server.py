"""Start and stop the ``tritonserver`` of a server environment (:mod:`norface_rt.serving.env`).

Used by ``norface-rt triton-server serve``, the tests and the benchmarks alike: one process on
loopback by default, free ports unless told, readiness awaited with a timeout (the process dying
first is reported with its log), and :meth:`TritonServer.stop` always ends it (SIGINT, then
SIGKILL of its process group, which holds the Python backend's stub processes too).

The Python backend's shared-memory regions get a per-server prefix, so several servers (two test
runs, a user's and CI's) never collide in ``/dev/shm``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any

from norface_rt.serving.env import ServerEnv

log = logging.getLogger(__name__)


# Log lines after which a starting server will never become ready.
_FATAL = ("failed to load", "Failed to preinitialize Python stub", "error: creating server")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM the server when the process that started it dies (a
    killed test run or CLI must not leave a server holding its ports). Linux only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class TritonServer:
    """One ``tritonserver`` process serving ``repository``.

    Ports default to free ones; pass them to restart a server where its clients expect it.
    ``log_path`` receives the server's output (default: a file in the repository's parent).
    """

    def __init__(self, repository: str | os.PathLike[str], env: ServerEnv | None = None, *,
                 host: str = "127.0.0.1", grpc_port: int | None = None,
                 http_port: int | None = None, metrics_port: int | None = None,
                 log_path: str | os.PathLike[str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise FileNotFoundError(f"Triton model repository not found: {self.repository}")
        self.env = env or ServerEnv.load()
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.log_path = Path(log_path) if log_path else \
            self.repository.parent / f"tritonserver-{self.grpc_port}.log"
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._shm_prefix = ""

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        prefix = self._shm_prefix = f"norface_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        return [str(self.env.tritonserver),
                f"--model-repository={self.repository}",
                f"--backend-directory={self.env.backends_dir}",
                f"--backend-config=python,shm-region-prefix-name={prefix}",
                "--backend-config=python,shm-default-byte-size=8388608",
                "--backend-config=python,shm-growth-byte-size=8388608",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                "--allow-gpu-metrics=false", "--strict-readiness=true", "--exit-on-error=true",
                "--log-verbose=0", *self.extra_args]

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start the process and wait until it and every model are ready."""
        if self.running:
            raise RuntimeError(f"tritonserver already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")  # this start's log only (a restart starts it anew)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self._proc = subprocess.Popen(self.command(), env=self.env.environ(), stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"tritonserver exited with {code} before it was ready; its "
                                   f"log ({self.log_path}) ends with:\n{self.log_tail()}")
            if self.ready():
                return self
            fatal = self._fatal_log_line()
            if fatal:  # some load failures leave the server up but never ready: do not wait
                self.stop()
                raise RuntimeError(f"tritonserver failed before it was ready ({fatal.strip()}); "
                                   f"its log ({self.log_path}) ends with:\n{self.log_tail()}")
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"tritonserver not ready within {timeout:g} s; its log "
                           f"({self.log_path}) ends with:\n{self.log_tail()}")

    def _fatal_log_line(self) -> str | None:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        return next((ln for ln in text.splitlines() if any(p in ln for p in _FATAL)), None)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def statistics(self, model: str = "") -> dict[str, Any]:
        """Triton's statistics extension (``/v2/models[/NAME]/stats``) as parsed JSON."""
        path = f"/v2/models/{model}/stats" if model else "/v2/models/stats"
        with urllib.request.urlopen(self.http_url + path, timeout=5.0) as r:
            return dict(json.loads(r.read()))

    def kill(self) -> None:
        """SIGKILL the server and its stub processes at once (a crash, for tests)."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._close_log()
        self._remove_shm()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (Triton unloads its models and exits), SIGKILL of the group after ``timeout``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver pid %d ignored SIGINT for %.0f s; killing it", proc.pid,
                            timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        if proc is not None:
            try:  # stub processes left behind by a server that died
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._close_log()
        self._remove_shm()

    def _remove_shm(self) -> None:
        """The Python backend's regions of this server: a server that exits cleanly removes
        them, one that was killed or failed to load leaves them in /dev/shm."""
        if not self._shm_prefix:
            return
        shm = Path("/dev/shm")
        for f in shm.glob(self._shm_prefix + "*") if shm.is_dir() else ():
            try:
                f.unlink()
            except OSError:
                log.debug("removing %s failed", f, exc_info=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
