"""Child processes with a hard time limit: each part of the kit runs in its own process, so a
hung CUDA call or a crashed driver costs that part only, and the run still ends in time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gpu_kit import REPO


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # None: killed at the time limit
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    """End the child and everything it started (its own session), politely first."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bounded(cmd: Sequence[str], *, timeout: float, log: Path,
                env: Mapping[str, str] | None = None) -> Finished:
    """Run ``cmd`` from the repository root, its output appended to ``log``; after ``timeout``
    seconds it is killed with every process it started."""
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}   (limit {timeout:.0f} s)\n")
        f.flush()
        t0 = time.monotonic()
        p = subprocess.Popen(list(cmd), cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                             env=dict(env) if env is not None else None, start_new_session=True)
        try:
            rc: int | None = p.wait(max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill_group(p)
            rc = None
        except BaseException:  # Ctrl-C: do not leave the child running
            _kill_group(p)
            raise
        seconds = time.monotonic() - t0
        f.write(f"[exit {rc if rc is not None else 'killed at the time limit'} after "
                f"{seconds:.1f} s]\n")
    return Finished(rc, seconds)


def child_env() -> dict[str, str]:
    """The environment of the kit's children: unbuffered output (a killed child's log is
    complete up to its last line)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env
