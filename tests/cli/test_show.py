"""``run --show`` against a real X server (Xvfb): the window draws the annotated frames while the
run goes on, every frame reaches the window sink, and q ends the run cleanly.

The screen is read back with Pillow's X11 grabber (``ImageGrab.grab(xdisplay=...)``) and keys
are typed with the XTEST extension through ctypes (libXtst), as a person at the keyboard would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from norface_rt.sinks.overlay import PALETTE, PANEL_BG

pytestmark = pytest.mark.timeout(180)


def _gui_env(display: str) -> dict[str, str]:
    env = {**os.environ, "DISPLAY": display}
    env.pop("WAYLAND_DISPLAY", None)
    env.setdefault("QT_QPA_PLATFORM", "xcb")
    return env


def _grab(display: str) -> np.ndarray:
    from PIL import ImageGrab

    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int(np.all(np.abs(img.astype(np.int16) - np.array(rgb, np.int16)) <= tol, axis=-1).sum())


def _shows_annotated_frame(img: np.ndarray) -> bool:
    """The window's picture: the first track's box and tag colour, the side panel's background,
    and a real picture beside them (not one flat colour)."""
    return (_near(img, PALETTE[0]) > 400 and _near(img, PANEL_BG, tol=3) > 20_000
            and float(img.std()) > 20.0)


def _run_show(display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch, *extra: str) -> subprocess.Popen[str]:
    pytest.importorskip("PIL.ImageGrab")
    from norface_rt.sinks.overlay import gui_unavailable_reason

    monkeypatch.setenv("DISPLAY", display)
    reason = gui_unavailable_reason()
    if reason is not None:
        pytest.skip(f"--show cannot work here: {reason}")
    return subprocess.Popen(
        [sys.executable, "-m", "norface_rt", "run", str(media_dir / "single_face.mp4"),
         "--landmarker", str(landmarker_path), "--show", "--zmq", "none", "--no-progress",
         "--stats-json", str(tmp_path / "stats.json"), *extra],
        env=_gui_env(display), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_window(display: str, proc: subprocess.Popen[str], timeout: float = 60.0
                     ) -> np.ndarray | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        img = _grab(display)
        if _shows_annotated_frame(img):
            return img
        time.sleep(0.1)
    return None


def test_show_draws_the_annotated_frames_on_a_real_display(
        xvfb_display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
        artifact_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Paced at the clip's rate (72 frames, 2.4 s), so the window is on screen long enough to look.
    proc = _run_show(xvfb_display, media_dir, landmarker_path, tmp_path, monkeypatch, "--realtime")
    try:
        shot = _wait_for_window(xvfb_display, proc)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    blank = _grab(xvfb_display)  # after the run: the window is gone again
    if shot is not None:
        from PIL import Image

        Image.fromarray(shot).save(artifact_dir / "show_window.png")
    assert proc.returncode == 0, err[-2000:]
    assert shot is not None, f"the window never showed an annotated frame; stderr: {err[-2000:]}"
    assert not _shows_annotated_frame(blank), "the window outlived the run"
    sink = json.loads((tmp_path / "stats.json").read_text())["sinks"]["show"]
    # Every frame reached the window sink; what the screen skipped (a newer frame arrived before
    # it was drawn) is counted, not lost.
    assert (sink["written"], sink["dropped"], sink["failed"]) == (72, 0, 0), sink
    assert sink["shown"] + sink["replaced"] == 72 and sink["shown"] >= 24, sink
    assert "Timers cannot be stopped from another thread" not in err


class _XTest:
    """Pointer moves and key presses through the XTEST extension (libX11 + libXtst)."""

    def __init__(self, display: str) -> None:
        x11 = ctypes.util.find_library("X11")
        xtst = ctypes.util.find_library("Xtst")
        if not x11 or not xtst:
            pytest.skip("libX11 / libXtst not found: `apt-get install libxtst6` "
                        "(.ci/install-test-deps.sh does)")
        self.x = ctypes.CDLL(x11)
        self.t = ctypes.CDLL(xtst)
        self.x.XOpenDisplay.restype = ctypes.c_void_p
        self.x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self.x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.x.XFlush.argtypes = [ctypes.c_void_p]
        self.x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self.t.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                             ctypes.c_ulong]
        self.t.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                                ctypes.c_int, ctypes.c_ulong]
        self.dpy: Any = self.x.XOpenDisplay(display.encode())
        if not self.dpy:
            pytest.skip(f"cannot open X display {display}")

    def press(self, keysym: int, at: tuple[int, int]) -> None:
        # Without a window manager the keyboard focus follows the pointer: point at the window.
        self.t.XTestFakeMotionEvent(self.dpy, -1, at[0], at[1], 0)
        code = self.x.XKeysymToKeycode(self.dpy, keysym)
        self.t.XTestFakeKeyEvent(self.dpy, code, 1, 0)
        self.t.XTestFakeKeyEvent(self.dpy, code, 0, 0)
        self.x.XFlush(self.dpy)

    def close(self) -> None:
        self.x.XCloseDisplay(self.dpy)


def test_q_in_the_window_ends_a_looping_run_cleanly(
        xvfb_display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _run_show(xvfb_display, media_dir, landmarker_path, tmp_path, monkeypatch,
                     "--realtime", "--loop")
    keys = _XTest(xvfb_display)
    try:
        shot = _wait_for_window(xvfb_display, proc)
        assert shot is not None, "the window never showed an annotated frame"
        ys, xs = np.nonzero(np.all(shot == np.array(PANEL_BG, np.uint8), axis=-1))
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 20:
            keys.press(ord("q"), (int(np.median(xs)), int(np.median(ys))))
            time.sleep(0.3)
        out, err = proc.communicate(timeout=60)
    finally:
        keys.close()
        proc.kill()
    assert proc.returncode == 0, err[-2000:]  # q is a clean end, not an interruption
    sink = json.loads((tmp_path / "stats.json").read_text())["sinks"]["show"]
    assert sink["dropped"] == 0 and sink["failed"] == 0 and sink["written"] > 0, sink
