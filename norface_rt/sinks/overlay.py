"""Annotated video: drawing results onto frames, writing them to mp4, or showing them in a window.

The drawing is for humans checking what the analyser sees, so it favours legibility: per-track
colours, the top emotion with its probability, a bar per AU intensity, and an unmissable
UNTRAINED MODEL watermark when the weights are random, so a demo video can never be mistaken for
real affect estimates.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from norface_rt.config import DEFAULT_AU_INTENSITY_MAX
from norface_rt.files import slug
from norface_rt.images import check_rgb_image
from norface_rt.sinks.base import Sink
from norface_rt.video import Mp4Writer, available_codec

log = logging.getLogger(__name__)

# RGB colours, cycled by track id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 140, 0), (60, 220, 60), (255, 60, 160), (160, 100, 255),
    (255, 230, 0), (0, 255, 170), (255, 90, 90),
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
          color: tuple[int, int, int], thickness: int = 1,
          bg: tuple[int, int, int] | None = (0, 0, 0)) -> tuple[int, int]:
    """Text with a filled background (readable on any frame); returns its (width, height)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = org
    if bg is not None:
        cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), bg, cv2.FILLED)
    cv2.putText(img, text, (x, y), _FONT, scale, color, thickness, cv2.LINE_AA)
    return tw, th + base


def _watermark(img: np.ndarray, scale: float) -> None:
    h, w = img.shape[:2]
    text = "UNTRAINED MODEL"
    thick = max(2, int(round(3 * scale)))
    fs = 1.0
    (tw, _), _ = cv2.getTextSize(text, _FONT, fs, thick)
    fs = max(0.5, 0.8 * w / max(tw, 1))  # span ~80% of the width
    (tw, th), base = cv2.getTextSize(text, _FONT, fs, thick)
    x, y = (w - tw) // 2, (h + th) // 2
    # Blend only the text's region: a full-frame copy costs ~15 ms at 1080p.
    r0, r1 = max(0, y - th - thick), min(h, y + base + thick)
    c0, c1 = max(0, x - thick), min(w, x + tw + thick)
    roi = img[r0:r1, c0:c1]
    layer = roi.copy()
    cv2.putText(layer, text, (x - c0, y - r0), _FONT, fs, (255, 0, 0), thick, cv2.LINE_AA)
    cv2.addWeighted(layer, 0.45, roi, 0.55, 0.0, dst=roi)
    _text(img, "UNTRAINED MODEL - results are meaningless", (4, h - 6), 0.45 * scale,
          (255, 80, 80))


def _au_bars(img: np.ndarray, face: dict[str, Any], x0: int, y1: int, width: int, scale: float,
             color: tuple[int, int, int], au_max: float) -> None:
    """A small bar chart of AU intensities (0..``au_max``) under the box, in label order."""
    aus = list(face["au_intensity"].items())
    if not aus:
        return
    h_img, w_img = img.shape[:2]
    bar_w = max(2, width // len(aus))
    panel_w = bar_w * len(aus)
    panel_h = max(12, int(28 * scale))
    top = y1 + 4
    if top + panel_h >= h_img:  # no room below the box: draw inside its bottom edge
        top = y1 - panel_h - 2
    top = min(max(0, top), max(0, h_img - panel_h))
    left = min(max(0, x0), max(0, w_img - panel_w))
    sub = img[top:top + panel_h, left:left + panel_w]
    sub //= 3  # darken the background panel in place
    for i, (_, v) in enumerate(aus):
        bh = int(round(panel_h * min(max(v, 0.0), au_max) / au_max))
        if bh:
            cv2.rectangle(img, (left + i * bar_w, top + panel_h - bh),
                          (left + (i + 1) * bar_w - 2, top + panel_h - 1), color, cv2.FILLED)
    top3 = sorted(aus, key=lambda kv: -kv[1])[:3]
    label = " ".join(f"{k}:{v:.1f}" for k, v in top3)
    _text(img, label, (left, min(h_img - 2, top + panel_h + int(14 * scale))), 0.38 * scale,
          (255, 255, 255))


def draw(image: np.ndarray, msg: dict[str, Any], *, fps: float | None = None) -> np.ndarray:
    """Return a new RGB image with ``msg`` (a ``frame`` message) drawn onto ``image``.

    Boxes are in the message's pixel space (``width`` x ``height``) and are scaled when the image
    has another size, so an overlay can be drawn on a downscaled copy.
    """
    check_rgb_image(image)
    if msg.get("type") != "frame":
        raise ValueError(f"msg.type: expected 'frame', got {msg.get('type')!r}")
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    sx, sy = w / float(msg["width"]), h / float(msg["height"])
    scale = max(0.5, min(w, h) / 480.0)
    thick = max(1, int(round(2 * scale)))
    for face in msg["faces"]:
        color = PALETTE[face["track_id"] % len(PALETTE)] if face["track_id"] >= 0 else (200, 200, 200)
        bx0, by0, bx1, by1 = face["box"]
        x0, y0 = int(round(bx0 * sx)), int(round(by0 * sy))
        x1, y1 = int(round(bx1 * sx)), int(round(by1 * sy))
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thick, cv2.LINE_AA)
        prob = face["emotions"].get(face["top_emotion"])
        label = f"#{face['track_id']} {face['top_emotion']}"
        if prob is not None:
            label += f" {prob:.0%}"
        _text(out, label, (max(2, x0), max(int(16 * scale), y0 - 4)), 0.5 * scale, (0, 0, 0),
              1, bg=color)
        _au_bars(out, face, x0, y1, max(x1 - x0, 36), scale, color,
                 float(msg.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX)))
    head = f"{msg['stream_id']}  frame {msg['frame_index']}"
    if fps is not None:
        head += f"  {fps:.1f} fps"
    _text(out, head, (4, int(18 * scale)), 0.5 * scale, (255, 255, 255))
    if msg.get("error"):
        _text(out, f"ERROR: {msg['error']}"[:120], (4, int(40 * scale)), 0.45 * scale,
              (255, 80, 80))
    if msg.get("untrained"):
        _watermark(out, scale)
    return out


class _FpsMeter:
    """Exponential moving average of the publish rate, from the messages' ``emit_time``."""

    def __init__(self) -> None:
        self._last: float | None = None
        self.fps: float | None = None

    def update(self, t: float) -> float | None:
        if self._last is not None and t > self._last:
            inst = 1.0 / (t - self._last)
            self.fps = inst if self.fps is None else 0.9 * self.fps + 0.1 * inst
        self._last = t
        return self.fps


class OverlayVideoSink(Sink):
    """Writes annotated frames of one stream to a video file (:class:`norface_rt.video.Mp4Writer`).

    Timestamps follow the frames' ``pts`` (variable frame rate), so the video plays at the source's
    speed even when frames were dropped; ``fps`` is only used for frames without ``pts`` (image
    folders) or whose ``pts`` goes backwards (looping sources). ``width``/``height`` default to the
    first frame's size; other sizes are resized to it, odd sizes rounded down to even (yuv420p).
    """

    name = "overlay"
    needs_image = True

    def __init__(self, path: str | Path, fps: float = 30.0, width: int | None = None,
                 height: int | None = None, *, stream_id: str | None = None,
                 codec: str | None = None, crf: int = 23) -> None:
        self._writer = Mp4Writer(path, fps, width, height, codec=codec, crf=crf)
        self.path = self._writer.path
        self.stream_id = stream_id
        self._meter = _FpsMeter()

    @property
    def codec(self) -> str:
        return self._writer.codec

    @property
    def frames(self) -> int:
        return self._writer.frames

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        if msg.get("type") != "frame":
            return
        if self.stream_id is None:
            self.stream_id = msg["stream_id"]
        elif msg["stream_id"] != self.stream_id:
            raise ValueError(f"stream_id: expected {self.stream_id!r} (one stream per overlay "
                             f"file; use MultiStreamOverlaySink), got {msg['stream_id']!r}")
        if image is None:
            raise ValueError("image: expected the frame's RGB pixels for the overlay, got None "
                             "(the pipeline keeps them only for sinks with needs_image=True)")
        check_rgb_image(image)
        fps = self._meter.update(float(msg["emit_time"]))
        self._writer.write(draw(image, msg, fps=fps), msg["pts"])

    def close(self) -> None:
        if not self._writer.opened:
            log.warning("overlay %s: no frame arrived, no video written", self.path)
        self._writer.close()


class MultiStreamOverlaySink(Sink):
    """One :class:`OverlayVideoSink` per stream.

    With ``multiple=False`` the first stream goes to ``path`` itself; otherwise (and for any
    unexpected extra stream) each stream goes to ``<stem>-<stream_id><suffix>`` beside it.
    """

    name = "overlay"
    needs_image = True

    def __init__(self, path: str | Path, *, multiple: bool = False, fps: float = 30.0,
                 codec: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        self.multiple = multiple
        self.fps = fps
        self.codec = codec or available_codec()
        self.sinks: dict[str, OverlayVideoSink] = {}

    def path_for(self, stream_id: str) -> Path:
        if not self.multiple and not self.sinks:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{slug(stream_id, sep='_')}{self.path.suffix}")

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        if msg.get("type") != "frame":
            return
        sid = msg["stream_id"]
        sink = self.sinks.get(sid)
        if sink is None:
            p = self.path_for(sid)
            if not self.multiple and self.sinks:
                log.warning("overlay: extra stream %r written to %s", sid, p)
            sink = self.sinks[sid] = OverlayVideoSink(p, self.fps, stream_id=sid, codec=self.codec)
        sink.write(msg, image)

    def close(self) -> None:
        errors = []
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception as exc:  # close the others, then report
                errors.append(f"{sink.path}: {exc}")
        if errors:
            raise RuntimeError("closing overlay videos failed: " + "; ".join(errors))


def gui_unavailable_reason() -> str | None:
    """Why ``cv2.imshow`` cannot work here, or None when it should."""
    framework = cv2.currentUIFramework() if hasattr(cv2, "currentUIFramework") else None
    if framework is None:
        info = cv2.getBuildInformation()
        m = re.search(r"GUI:\s*(\S+)", info)
        framework = m.group(1) if m else ""
    if not framework or framework.upper() == "NONE":
        return ("this OpenCV build has no GUI (opencv-python-headless); "
                "`pip install opencv-python` for --show, or write an --overlay video instead")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display: DISPLAY / WAYLAND_DISPLAY are not set (--show needs a desktop "
                "session); write an --overlay video instead")
    return None


class ShowSink(Sink):
    """Shows annotated frames in one window per stream (``--show``). Press q or Esc to ask to quit.

    The check happens at construction so a headless machine fails before the pipeline starts, not
    on the first frame (Qt would otherwise abort the whole process without a display).
    """

    name = "show"
    needs_image = True

    def __init__(self, title: str = "norface-rt") -> None:
        reason = gui_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"cannot show video: {reason}")
        self.title = title
        self.quit_requested = False
        self._windows: set[str] = set()
        self._meters: dict[str, _FpsMeter] = {}

    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        if msg.get("type") != "frame" or image is None:
            return
        sid = msg["stream_id"]
        meter = self._meters.setdefault(sid, _FpsMeter())
        drawn = draw(image, msg, fps=meter.update(float(msg["emit_time"])))
        name = f"{self.title}: {sid}"
        self._windows.add(name)
        cv2.imshow(name, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.quit_requested = True

    def close(self) -> None:
        for name in self._windows:
            try:
                cv2.destroyWindow(name)
            except cv2.error:
                pass
        self._windows.clear()
