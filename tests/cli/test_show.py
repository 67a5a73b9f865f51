"""``run --show`` against a real X server (Xvfb): the window draws the annotated frames while the
run goes on, every frame reaches the window sink, and q or closing the window ends the run
cleanly.

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

pytestmark = pytest.mark.timeout(300)


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


# single_face.mp4 three times over: 216 frames, 7.2 s at its rate. Played once the 2.4-s clip
# left the window on screen too briefly for the screen grabs of a loaded machine to catch an
# annotated frame (one CI run in three).
REPEATS = 3


@pytest.fixture(scope="module")
def long_clip(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import av

    dst = tmp_path_factory.mktemp("show") / "single_face_x3.mp4"
    with av.open(str(media_dir / "single_face.mp4")) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    with av.open(str(dst), "w") as out:
        st = out.add_stream("mpeg4", rate=30)
        st.height, st.width = frames[0].shape[:2]
        st.pix_fmt = "yuv420p"
        for img in frames * REPEATS:
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return dst


def _run_show(display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch, *extra: str,
              clip: Path | None = None) -> subprocess.Popen[str]:
    pytest.importorskip("PIL.ImageGrab")
    from norface_rt.sinks.overlay import gui_unavailable_reason

    monkeypatch.setenv("DISPLAY", display)
    reason = gui_unavailable_reason()
    if reason is not None:
        pytest.skip(f"--show cannot work here: {reason}")
    return subprocess.Popen(
        [sys.executable, "-m", "norface_rt", "run", str(clip or media_dir / "single_face.mp4"),
         "--landmarker", str(landmarker_path), "--show", "--zmq", "none", "--no-progress",
         "--stats-json", str(tmp_path / "stats.json"), *extra],
        env=_gui_env(display), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_window(display: str, proc: subprocess.Popen[str], timeout: float = 120.0
                     ) -> np.ndarray | None:
    # Generous: on a shared machine under load, loading the model and MediaPipe before the first
    # frame took over 60 s in about one run in five.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        img = _grab(display)
        if _shows_annotated_frame(img):
            return img
        time.sleep(0.1)
    return None


def test_show_draws_the_annotated_frames_on_a_real_display(
        xvfb_display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
        artifact_dir: Path, monkeypatch: pytest.MonkeyPatch, long_clip: Path) -> None:
    # Paced at the clip's rate (216 frames, 7.2 s), so the window is on screen long enough to look.
    proc = _run_show(xvfb_display, media_dir, landmarker_path, tmp_path, monkeypatch, "--realtime",
                     clip=long_clip)
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
    stats = json.loads((tmp_path / "stats.json").read_text())
    sink, stream = stats["sinks"]["show"], stats["streams"]["single_face_x3"]
    # Every frame of the clip is accounted for: --realtime drops (counted) what a loaded machine
    # cannot keep pace with, and every frame the pipeline published reached the window sink;
    # what the screen skipped (a newer frame arrived before it was drawn) is counted, not lost.
    assert stats["frames"] + stream["dropped_frames"] == 72 * REPEATS, stream
    assert (sink["written"], sink["dropped"], sink["failed"]) == (stats["frames"], 0, 0), sink
    assert sink["shown"] + sink["replaced"] == sink["written"] and sink["shown"] >= 12, sink
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

    def close_window(self, title: str) -> int:
        """Ask every window titled ``title`` to close, as a window manager's close button does
        (a WM_DELETE_WINDOW client message); returns how many were asked."""
        x = self.x
        x.XDefaultRootWindow.restype = ctypes.c_ulong
        x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x.XInternAtom.restype = ctypes.c_ulong
        x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.c_ulong),
                                 ctypes.POINTER(ctypes.POINTER(ctypes.c_ulong)),
                                 ctypes.POINTER(ctypes.c_uint)]
        x.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
        x.XFree.argtypes = [ctypes.c_void_p]
        x.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                                 ctypes.c_void_p]

        def windows(parent: int, depth: int) -> list[int]:
            root, up = ctypes.c_ulong(), ctypes.c_ulong()
            kids, n = ctypes.POINTER(ctypes.c_ulong)(), ctypes.c_uint()
            if not x.XQueryTree(self.dpy, parent, ctypes.byref(root), ctypes.byref(up),
                                ctypes.byref(kids), ctypes.byref(n)):
                return []
            found = [kids[i] for i in range(n.value)]
            if kids:
                x.XFree(kids)
            return found + [w for k in found if depth > 1 for w in windows(k, depth - 1)]

        def name(w: int) -> str:
            out = ctypes.c_char_p()
            if not x.XFetchName(self.dpy, w, ctypes.byref(out)) or not out.value:
                return ""
            text = out.value.decode(errors="replace")
            x.XFree(ctypes.cast(out, ctypes.c_void_p))
            return text

        protocols = x.XInternAtom(self.dpy, b"WM_PROTOCOLS", 0)
        delete = x.XInternAtom(self.dpy, b"WM_DELETE_WINDOW", 0)
        asked = 0
        for w in windows(x.XDefaultRootWindow(self.dpy), 2):
            if name(w) != title:
                continue
            ev = _ClientMessage(type=33, window=w, message_type=protocols, format=32)  # ClientMessage
            ev.data[0] = delete
            x.XSendEvent(self.dpy, w, 0, 0, ctypes.byref(ev))
            asked += 1
        x.XFlush(self.dpy)
        return asked

    def close(self) -> None:
        self.x.XCloseDisplay(self.dpy)


class _ClientMessage(ctypes.Structure):
    """Xlib's XClientMessageEvent, padded to the size of an XEvent (24 longs)."""

    _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                ("message_type", ctypes.c_ulong), ("format", ctypes.c_int),
                ("data", ctypes.c_long * 5), ("pad", ctypes.c_long * 12)]


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


def test_closing_the_window_ends_a_looping_run_cleanly(
        xvfb_display: str, media_dir: Path, landmarker_path: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _run_show(xvfb_display, media_dir, landmarker_path, tmp_path, monkeypatch,
                     "--realtime", "--loop")
    x11 = _XTest(xvfb_display)
    try:
        assert _wait_for_window(xvfb_display, proc) is not None, "the window never showed a frame"
        assert x11.close_window("norface-rt: single_face") == 1, "no window with that title"
        out, err = proc.communicate(timeout=30)
    finally:
        x11.close()
        proc.kill()
    assert proc.returncode == 0, err[-2000:]  # a closed window is a clean end
    assert "closed: ending the run" in err, err[-2000:]
    assert not _shows_annotated_frame(_grab(xvfb_display)), "the window outlived the run"
    sink = json.loads((tmp_path / "stats.json").read_text())["sinks"]["show"]
    assert sink["dropped"] == 0 and sink["failed"] == 0 and sink["written"] > 0, sink
