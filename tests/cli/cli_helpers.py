"""What the CLI tests share: a free loopback port and the CLI as a child process."""

from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def norface(*args: str, **kw) -> subprocess.Popen[str]:
    """``norface-rt ARGS`` running (text pipes as ``kw`` asks)."""
    return subprocess.Popen([sys.executable, "-m", "norface_rt", *args], text=True, **kw)
