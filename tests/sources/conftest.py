"""Helpers for the source tests: draining a source with a deadline, and a real RTSP server."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from norface_rt.sources import Source
from norface_rt.types import EndOfStream, FramePacket

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "rtsp_server.py"

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]
Take = Callable[..., list[FramePacket]]


def drain_source(source: Source, deadline_s: float = 20.0) -> tuple[list[FramePacket], EndOfStream]:
    """Read until the EndOfStream; fails the test when the deadline passes first."""
    packets: list[FramePacket] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        item = source.read(timeout=min(1.0, max(0.0, end - time.monotonic())))
        if isinstance(item, EndOfStream):
            return packets, item
        if item is not None:
            packets.append(item)
    pytest.fail(f"no EndOfStream from {source!r} within {deadline_s} s "
                f"({len(packets)} frames read)")


def take_frames(source: Source, n: int, deadline_s: float = 20.0) -> list[FramePacket]:
    """Read exactly ``n`` frames; fails the test on an EndOfStream or when the deadline passes."""
    packets: list[FramePacket] = []
    end = time.monotonic() + deadline_s
    while len(packets) < n:
        left = end - time.monotonic()
        if left <= 0:
            pytest.fail(f"only {len(packets)} of {n} frames from {source!r} within "
                        f"{deadline_s} s")
        item = source.read(timeout=min(1.0, left))
        if isinstance(item, EndOfStream):
            pytest.fail(f"EndOfStream after {len(packets)} of {n} frames: {item}")
        if item is not None:
            packets.append(item)
    return packets


@pytest.fixture
def drain() -> Drain:
    return drain_source


@pytest.fixture
def take() -> Take:
    return take_frames


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rtsp_server_missing() -> str | None:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst','1.0');"
             "gi.require_version('GstRtspServer','1.0');"
             "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
             "missing=[e for e in ('x264enc','rtph264pay','appsrc','decodebin','videoscale')"
             " if Gst.ElementFactory.find(e) is None];"
             "print(' '.join(missing))")
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot probe {SYSTEM_PYTHON}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{SYSTEM_PYTHON} cannot import gi.repository.GstRtspServer ({last}); "
                "run .ci/install-test-deps.sh")
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()}; run .ci/install-test-deps.sh"
    return None


@pytest.fixture(scope="session")
def rtsp_available() -> None:
    reason = _rtsp_server_missing()
    if reason:
        pytest.skip(reason)


@dataclass
class RtspServer:
    """One ``tests/rtsp_server.py`` process; ``start`` waits for its READY line."""

    media: Path
    port: int
    mount: str = "/cam"
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--media", str(self.media), "--port",
             str(self.port), "--mount", self.mount, "--max-frames", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        lines: list[str] = []
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if not sel.select(timeout=max(0.0, end - time.monotonic())):
                    break
                line = self.proc.stdout.readline()
                if not line:  # exited
                    break
                lines.append(line.rstrip())
                if line.startswith("READY "):
                    return
        self.kill()
        pytest.fail(f"RTSP server did not become ready within {timeout} s: {lines[-10:]}")

    def kill(self) -> None:
        """SIGKILL: the abrupt death of a camera, no RTSP TEARDOWN."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def rtsp_server(rtsp_available: None, media_dir: Path) -> Iterator[RtspServer]:
    """A started server on a free loopback port, looping single_face.mp4 (320x180)."""
    media = media_dir / "single_face.mp4"
    if not media.is_file():
        pytest.skip(f"test media not found: {media}")
    server = RtspServer(media=media, port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.terminate()
