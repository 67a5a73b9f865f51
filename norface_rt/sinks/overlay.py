"""Annotated video: drawing results onto frames, writing them to mp4, or showing them in a window.

The drawing is for humans checking what the analyser sees, so it favours legibility over
compactness (see ``docs/images/overlay_example.png``):

* on the frame, each face gets a box in its track's colour (full when its quality flag is ok,
  corner brackets only when it is not) and a small tag ``#id emotion``; tags are placed where they
  overlap no other tag, so neighbouring faces in a group shot never hide each other's labels;
* a side panel to the right of the frame (the output is wider than the source) holds one block
  per face, left to right as on the frame: the top emotions with their probabilities, the quality
  issues if any, and a bar per AU intensity (0..max) labelled with the AU number, drawn bright
  when the AU's occurrence probability is at least 0.5 and dim otherwise;
* the panel's head names the stream, frame and time, the faces cut by ``--max-faces`` and, for a
  live window only, the real processing rate (frames published per second over the last few
  seconds); a file overlay shows no rate, since its frames play at the source's speed;
* an unmissable UNTRAINED MODEL watermark when the weights are random, so a demo video can never
  be mistaken for real affect estimates.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from norface_rt.config import DEFAULT_AU_INTENSITY_MAX
from norface_rt.files import slug, stream_file
from norface_rt.images import check_rgb_image
from norface_rt.sinks.base import Sink
from norface_rt.video import Mp4Writer, available_codec
from norface_rt.wire.messages import FrameMessage, Message, as_message

log = logging.getLogger(__name__)

# RGB colours, cycled by track id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 200, 255), (255, 140, 0), (60, 220, 60), (255, 60, 160), (160, 100, 255),
    (255, 230, 0), (0, 255, 170), (255, 90, 90),
)
UNTRACKED = (200, 200, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
PANEL_BG = (24, 24, 28)
PANEL_WIDTH = 340  # side panel width in pixels at a frame height of 480 (scales with the frame)
MAX_PANEL_SCALE = 3.0
OCCURRENCE_BRIGHT = 0.5  # an AU bar is drawn bright when its occurrence probability reaches this

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


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


def _fit(text: str, width: int, scale: float, thickness: int = 1) -> str:
    """``text`` shortened with '...' to at most ``width`` pixels."""
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", _FONT, scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..."


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


def track_color(track_id: int) -> tuple[int, int, int]:
    return PALETTE[track_id % len(PALETTE)] if track_id >= 0 else UNTRACKED


def _overlap(a: Rect, b: Rect) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def place_tags(boxes: list[Rect], sizes: list[tuple[int, int]], width: int,
               height: int) -> list[Rect]:
    """A rectangle for each face's tag, touching its box and overlapping no tag placed before
    it (or, when every spot is taken, the spot overlapping least). Candidates, in order: above
    the box (left-, then right-aligned), below it, inside its top edge, then further up."""
    placed: list[Rect] = []
    for (x0, y0, x1, y1), (tw, th) in zip(boxes, sizes):
        cands = [(x0, y0 - th - 2), (x1 - tw, y0 - th - 2), (x0, y1 + 2), (x1 - tw, y1 + 2),
                 (x0 + 2, y0 + 2)]
        cands += [(x0, y0 - (k + 1) * (th + 2)) for k in range(1, 4)]
        best: Rect | None = None
        best_cost = None
        for cx, cy in cands:
            cx = min(max(0, cx), max(0, width - tw))
            cy = min(max(0, cy), max(0, height - th))
            r = (cx, cy, cx + tw, cy + th)
            cost = sum(_overlap(r, p) for p in placed)
            if best_cost is None or cost < best_cost:
                best, best_cost = r, cost
            if cost == 0:
                break
        assert best is not None
        placed.append(best)
    return placed


GAZE_COLOR = (255, 230, 60)  # gaze arrows: one colour for every face, seen on skin and on eyes
GAZE_LENGTH = 0.5  # an arrow's length for a gaze at 90 degrees, in face-box widths


def _gaze_arrows(img: np.ndarray, gaze: Mapping[str, Any] | None,
                 box: Sequence[float], sx: float, sy: float, thick: int) -> None:
    """An arrow from each iris centre along the eye's gaze as the camera sees it (its x, y),
    so looking into the camera draws a dot and looking aside a long arrow."""
    if not gaze or "pupil_0" not in gaze:
        return
    length = GAZE_LENGTH * (box[2] - box[0]) * sx
    for pupil, vec in ((gaze["pupil_0"], gaze["eye_0"]), (gaze["pupil_1"], gaze["eye_1"])):
        x0, y0 = pupil[0] * sx, pupil[1] * sy
        x1, y1 = x0 + vec[0] * length, y0 + vec[1] * length
        cv2.arrowedLine(img, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))),
                        GAZE_COLOR, max(1, thick - 1), cv2.LINE_AA, tipLength=0.3)


def _corners(img: np.ndarray, r: Rect, color: tuple[int, int, int], thick: int) -> None:
    """Corner brackets only: the box of a face whose quality flag is not ok."""
    x0, y0, x1, y1 = r
    lx, ly = max(4, (x1 - x0) // 4), max(4, (y1 - y0) // 4)
    for (ax, ay), (dx, dy) in (((x0, y0), (1, 1)), ((x1, y0), (-1, 1)), ((x0, y1), (1, -1)),
                               ((x1, y1), (-1, -1))):
        cv2.line(img, (ax, ay), (ax + dx * lx, ay), color, thick, cv2.LINE_AA)
        cv2.line(img, (ax, ay), (ax, ay + dy * ly), color, thick, cv2.LINE_AA)


def _au_label(name: str) -> str:
    """AU12 -> 12 (the bars are captioned 'AU'; two digits fit under a bar)."""
    return name[2:].lstrip("0") or "0" if name.startswith("AU") else name[:3]


def _block_text_h(face: dict[str, Any], compact: bool, u: float) -> float:
    """Height of a face block without its bars (the rows of :func:`_face_panel`)."""
    q = face.get("quality")
    rows = 46 + (0 if compact else 15) + (15 if q is not None and not q["ok"] else 0)
    return rows * u


def _face_panel(panel: np.ndarray, face: dict[str, Any], top: int, u: float, au_max: float,
                compact: bool, bar_h: int) -> int:
    """One face's block of the side panel from row ``top``; returns the row below it."""
    w = panel.shape[1]
    pad = int(round(10 * u))
    color = track_color(face["track_id"])
    lh = int(round(17 * u))
    y = top + lh
    cv2.rectangle(panel, (pad, y - int(11 * u)), (pad + int(10 * u), y - 1), color, cv2.FILLED)
    emos = sorted(face["emotions"].items(), key=lambda kv: -kv[1])
    head = f"#{face['track_id']}  {face['top_emotion']} {face['emotions'].get(face['top_emotion'], 0):.0%}"
    gaze = face.get("gaze")
    if gaze:  # degrees read more easily than radians at a glance (Hershey fonts have no degree sign)
        head += (f"  gaze {math.degrees(gaze['angle_x']):+.0f},"
                 f"{math.degrees(gaze['angle_y']):+.0f} deg")
    _text(panel, _fit(head, w - 3 * pad, 0.52 * u), (pad + int(16 * u), y), 0.52 * u, color,
          1, bg=None)
    if not compact:
        y += int(round(15 * u))
        rest = "  ".join(f"{k} {v:.0%}" for k, v in emos[1:4]
                         if k != face["top_emotion"] and v >= 0.005)
        _text(panel, _fit(rest, w - 2 * pad, 0.45 * u), (pad, y), 0.45 * u, (190, 190, 190), 1,
              bg=None)
    q = face.get("quality")
    if q is not None and not q["ok"]:
        y += int(round(15 * u))
        _text(panel, _fit("low quality: " + ", ".join(i.replace("_", " ") for i in q["issues"]),
                          w - 2 * pad, 0.4 * u), (pad, y), 0.4 * u, (255, 170, 60), 1, bg=None)
    aus = list(face["au_intensity"].items())
    if not aus:
        return y + int(round(8 * u))
    occ = face.get("au_occurrence", {})
    label_h = int(round(13 * u))
    top_bars = y + int(round(6 * u))
    span = w - 2 * pad - int(round(18 * u))  # room for the "AU" caption on the left
    bw = max(3, span // len(aus))
    x_start = w - pad - bw * len(aus)
    _text(panel, "AU", (pad, top_bars + bar_h + label_h - 2), 0.36 * u, (150, 150, 150), 1,
          bg=None)
    base = top_bars + bar_h
    cv2.line(panel, (x_start, base), (x_start + bw * len(aus) - 1, base), (90, 90, 90), 1)
    dim = tuple(int(0.35 * c + 0.65 * 70) for c in color)
    for i, (name, v) in enumerate(aus):
        bx = x_start + i * bw
        bh = int(round(bar_h * min(max(v, 0.0), au_max) / au_max))
        bright = occ.get(name, 0.0) >= OCCURRENCE_BRIGHT
        if bh:
            cv2.rectangle(panel, (bx + 1, base - bh), (bx + bw - 2, base - 1),
                          color if bright else dim, cv2.FILLED)
        lab = _au_label(name)
        fs = 0.34 * u
        (tw, _), _ = cv2.getTextSize(lab, _FONT, fs, 1)
        _text(panel, lab, (bx + (bw - tw) // 2, base + label_h - 2), fs,
              (230, 230, 230) if bright else (140, 140, 140), 1, bg=None)
    return base + label_h + int(round(10 * u))


def _panel(msg: Mapping[str, Any], height: int, u: float, fps: float | None) -> np.ndarray:
    """The side panel of a frame (see the module doc)."""
    w = int(round(PANEL_WIDTH * u))
    panel = np.empty((height, w, 3), np.uint8)
    panel[:] = PANEL_BG
    pad = int(round(10 * u))
    lh = int(round(17 * u))
    y = lh
    head = f"{msg['stream_id']}  frame {msg['frame_index']}"
    if msg.get("pts") is not None:
        head += f"  {msg['pts']:.2f} s"
    _text(panel, _fit(head, w - 2 * pad, 0.5 * u), (pad, y), 0.5 * u, (235, 235, 235), 1,
          bg=None)
    faces = sorted(msg["faces"], key=lambda f: f["box"][0])
    info = f"{len(faces)} face{'s' if len(faces) != 1 else ''}"
    if msg.get("faces_cut"):
        info += f" (+{msg['faces_cut']} cut by --max-faces)"
    if fps is not None:
        info += f", {fps:.1f} frames/s"
    y += int(round(17 * u))
    _text(panel, _fit(info, w - 2 * pad, 0.45 * u), (pad, y), 0.45 * u,
          (255, 170, 60) if msg.get("faces_cut") else (170, 170, 170), 1, bg=None)
    if msg.get("error"):
        y += int(round(15 * u))
        _text(panel, _fit("ERROR: " + str(msg["error"]), w - 2 * pad, 0.4 * u), (pad, y),
              0.4 * u, (255, 90, 90), 1, bg=None)
    y += int(round(8 * u))
    cv2.line(panel, (pad, y), (w - pad, y), (70, 70, 70), 1)
    au_max = float(msg.get("au_intensity_max", DEFAULT_AU_INTENSITY_MAX))
    # A block is its text rows plus the bars: full blocks while they fit, else compact ones (one
    # text row), else as many compact blocks as fit and a count of the rest. With room to spare
    # (few faces) the bars grow, up to 70 px at a 480-pixel frame height.
    room = height - y - 2 * lh  # the legend's two rows stay free
    min_bar, max_bar = 16 * u, 70 * u
    compact = sum(_block_text_h(f, False, u) for f in faces) + min_bar * len(faces) > room
    texts = [_block_text_h(f, compact, u) for f in faces]
    bar_h = int(min(max_bar, max(min_bar, (room - sum(texts)) / max(1, len(faces)))))
    shown: list[dict[str, Any]] = []
    used = 0.0
    for i, (face, th) in enumerate(zip(faces, texts)):
        last = i == len(faces) - 1
        if used + th + bar_h > room + 2 - (0 if last else lh):  # keep a row for "+N more"
            break
        shown.append(face)
        used += th + bar_h
    for face in shown:
        y = _face_panel(panel, face, y, u, au_max, compact, bar_h)
    if len(shown) < len(faces):
        _text(panel, f"+{len(faces) - len(shown)} more face(s) (boxes on the frame)",
              (pad, min(height - 4, y + lh)), 0.45 * u, (170, 170, 170), 1, bg=None)
    if faces and height - y >= 2 * lh:
        _text(panel, _fit(f"bars: AU intensity 0..{au_max:g}, bright = present (p >= 0.5)",
                          w - 2 * pad, 0.4 * u), (pad, height - int(round(8 * u))), 0.4 * u,
              (150, 150, 150), 1, bg=None)
    return panel


def draw(image: np.ndarray, msg: Mapping[str, Any], *, fps: float | None = None,
         panel: bool = True) -> np.ndarray:
    """Return a new RGB image with ``msg`` (a ``frame`` message) drawn onto ``image``.

    With ``panel`` (the default) the result is ``image`` plus a side panel on its right (see the
    module doc): wider than the input, same height. ``fps``, when given, is shown as the
    processing rate. Boxes are in the message's pixel space (``width`` x ``height``) and are
    scaled when the image has another size, so an overlay can be drawn on a downscaled copy.
    """
    check_rgb_image(image)
    if msg.get("type") != "frame":
        raise ValueError(f"msg.type: expected 'frame', got {msg.get('type')!r}")
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    sx, sy = w / float(msg["width"] or w), h / float(msg["height"] or h)
    scale = max(0.5, min(w, h) / 480.0)
    thick = max(1, int(round(2 * scale)))
    boxes: list[Rect] = []
    tags: list[str] = []
    sizes: list[tuple[int, int]] = []
    tag_scale = 0.55 * scale
    for face in msg["faces"]:
        bx0, by0, bx1, by1 = face["box"]
        r = (int(round(bx0 * sx)), int(round(by0 * sy)), int(round(bx1 * sx)),
             int(round(by1 * sy)))
        boxes.append(r)
        color = track_color(face["track_id"])
        q = face.get("quality")
        if q is None or q["ok"]:
            cv2.rectangle(out, r[:2], r[2:], color, thick, cv2.LINE_AA)
        else:
            _corners(out, r, color, thick)
        tag = f"#{face['track_id']} {face['top_emotion']}"
        (tw, th), base = cv2.getTextSize(tag, _FONT, tag_scale, 1)
        tags.append(tag)
        sizes.append((tw + 6, th + base + 6))
    for face in msg["faces"]:
        _gaze_arrows(out, face.get("gaze"), face["box"], sx, sy, thick)
    for face, tag, rect in zip(msg["faces"], tags, place_tags(boxes, sizes, w, h)):
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), track_color(face["track_id"]),
                      cv2.FILLED)
        cv2.putText(out, tag, (rect[0] + 3, rect[3] - 5), _FONT, tag_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if msg.get("untrained"):
        _watermark(out, scale)
    if not panel:
        return out
    u = min(MAX_PANEL_SCALE, max(1.0, h / 480.0))
    return np.ascontiguousarray(np.concatenate([out, _panel(msg, h, u, fps)], axis=1))


class RateMeter:
    """Frames per second over the last ``window`` seconds, from the messages' ``emit_time``:
    the rate a live window really processes at (None until a second of frames has passed).

    A moving average of 1/dt would report bursts: the batching stage publishes frames in groups
    a few milliseconds apart, which read as hundreds of frames per second."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = float(window)
        self._times: deque[float] = deque()

    def update(self, t: float) -> float | None:
        self._times.append(t)
        while self._times and self._times[0] < t - self.window:
            self._times.popleft()
        span = self._times[-1] - self._times[0]
        if len(self._times) < 2 or span < min(1.0, self.window):
            return None
        return (len(self._times) - 1) / span


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
                 codec: str | None = None, crf: int = 23, panel: bool = True) -> None:
        self._writer = Mp4Writer(path, fps, width, height, codec=codec, crf=crf)
        self.path = self._writer.path
        self.stream_id = stream_id
        self.panel = panel

    @property
    def codec(self) -> str:
        return self._writer.codec

    @property
    def frames(self) -> int:
        return self._writer.frames

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if not isinstance(msg, FrameMessage):
            return
        if self.stream_id is None:
            self.stream_id = msg.stream_id
        elif msg.stream_id != self.stream_id:
            raise ValueError(f"stream_id: expected {self.stream_id!r} (one stream per overlay "
                             f"file; use MultiStreamOverlaySink), got {msg.stream_id!r}")
        if image is None:
            raise ValueError("image: expected the frame's RGB pixels for the overlay, got None "
                             "(the pipeline keeps them only for sinks with needs_image=True)")
        check_rgb_image(image)
        # No rate burnt into a file: its frames play at the source's speed, not the analyser's.
        self._writer.write(draw(image, msg, panel=self.panel), msg.pts)

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
                 codec: str | None = None, panel: bool = True) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        self.multiple = multiple
        self.fps = fps
        self.codec = codec or available_codec()
        self.panel = panel
        self.sinks: dict[str, OverlayVideoSink] = {}

    def path_for(self, stream_id: str) -> Path:
        if not self.multiple and not self.sinks:
            return self.path
        return stream_file(self.path, stream_id)

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if not isinstance(msg, FrameMessage):
            return
        sid = msg.stream_id
        sink = self.sinks.get(sid)
        if sink is None:
            p = self.path_for(sid)
            if not self.multiple and self.sinks:
                log.warning("overlay: extra stream %r written to %s", sid, p)
            sink = self.sinks[sid] = OverlayVideoSink(p, self.fps, stream_id=sid, codec=self.codec,
                                                      panel=self.panel)
        sink.write(msg, image)

    def destination(self) -> str:
        return ", ".join(str(s.path) for s in self.sinks.values()) or str(self.path)

    def close(self) -> None:
        errors = []
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception as exc:  # close the others, then report
                errors.append(f"{sink.path}: {exc}")
        if errors:
            raise RuntimeError("closing overlay videos failed: " + "; ".join(errors))


# Picture formats an overlay of stills is written in (by the output path's suffix).
IMAGE_OVERLAY_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")


def is_image_overlay(path: str | os.PathLike[str]) -> bool:
    """Whether ``--overlay PATH`` asks for pictures (one per input image) rather than a video."""
    return Path(path).suffix.lower() in IMAGE_OVERLAY_SUFFIXES


class OverlayImageSink(Sink):
    """The overlay of stills as pictures: one annotated image per input picture, in the format of
    ``path``'s suffix (PNG, JPEG, WebP).

    With ``single`` (the run's only input is one image file) the picture is written to ``path``
    itself; otherwise each goes beside it, named after its input: ``<stem>-<input stem><suffix>``
    (``out.png`` and ``photos/a.jpg`` give ``out-a.png``), with the stream id added when several
    streams hold files of the same name. A frame that is not from a picture (a video's) is
    refused with an error saying to use a video file name."""

    name = "overlay"
    needs_image = True

    def __init__(self, path: str | Path, *, single: bool = False, panel: bool = True) -> None:
        self.path = Path(path)
        if not is_image_overlay(self.path):
            raise ValueError(f"--overlay: expected a picture file name ending in "
                             f"{', '.join(IMAGE_OVERLAY_SUFFIXES)}, got {self.path}")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        self.single = single
        self.panel = panel
        self.written: list[Path] = []
        self._names: dict[str, str] = {}  # output name -> the stream that took it

    def path_for(self, stream_id: str, source: str) -> Path:
        if self.single:
            return self.path
        name = f"{self.path.stem}-{slug(Path(source).stem, sep='_')}{self.path.suffix}"
        owner = self._names.setdefault(name, stream_id)
        if owner != stream_id:  # the same file name in another stream: keep both
            name = (f"{self.path.stem}-{slug(stream_id, sep='_')}-"
                    f"{slug(Path(source).stem, sep='_')}{self.path.suffix}")
        return self.path.with_name(name)

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if not isinstance(msg, FrameMessage):
            return
        if msg.source is None:
            raise ValueError(f"--overlay {self.path}: a picture per input is for photos and image "
                             f"folders; stream {msg.stream_id!r} is a video (write --overlay "
                             "FILE.mp4 for it)")
        if image is None:
            raise ValueError("image: expected the frame's RGB pixels for the overlay, got None "
                             "(the pipeline keeps them only for sinks with needs_image=True)")
        out = self.path_for(msg.stream_id, msg.source)
        drawn = cv2.cvtColor(draw(image, msg, panel=self.panel), cv2.COLOR_RGB2BGR)
        params = ([cv2.IMWRITE_JPEG_QUALITY, 92] if out.suffix.lower() in (".jpg", ".jpeg")
                  else [cv2.IMWRITE_WEBP_QUALITY, 92] if out.suffix.lower() == ".webp" else [])
        if not cv2.imwrite(str(out), drawn, params):
            raise OSError(f"could not write {out}")
        self.written.append(out)

    def destination(self) -> str:
        if len(self.written) > 3:
            return f"{self.written[0]} ... ({len(self.written)} pictures)"
        return ", ".join(map(str, self.written)) or str(self.path)

    def close(self) -> None:
        if not self.written:
            log.info("overlay %s: no picture arrived, nothing written", self.path)


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
    """Shows annotated frames in one window per stream (``--show``). q or Esc asks to quit, and
    so does closing a window.

    OpenCV's GUI backends (Qt, GTK) expect every window call to come from the thread that pumps
    their events, which must be the process's main thread; the pipeline calls :meth:`write` on
    the sink's own thread. So the work is split: :meth:`write` draws the frame (the costly part)
    and leaves it in a slot of one frame per stream, and the owner's main thread calls
    :meth:`pump` in its wait loop, which shows what the slots hold and handles keys and closed
    windows. A slot keeps the newest frame: when the display falls behind the pipeline (a file
    read faster than the screen refreshes), the frame it never showed is counted
    (``replaced``), not queued, so a window can neither stall the run nor grow memory. The
    check for a display happens at construction so a headless machine fails before the
    pipeline starts (Qt would otherwise abort the whole process without a display).
    """

    name = "show"
    needs_image = True
    main_thread = True

    def __init__(self, title: str = "norface-rt") -> None:
        reason = gui_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"cannot show video: {reason}")
        self.title = title
        self.quit_requested = False
        self._windows: set[str] = set()  # opened by pump(), main thread only
        self._meters: dict[str, RateMeter] = {}
        self._slots: dict[str, np.ndarray] = {}  # window name -> newest drawn BGR frame
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0  # frames handed to the window sink
        self.shown = 0  # frames put on screen
        self.replaced = 0  # frames a newer one replaced before the screen showed them

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if not isinstance(msg, FrameMessage) or image is None:
            return
        sid = msg.stream_id
        meter = self._meters.setdefault(sid, RateMeter())
        drawn = cv2.cvtColor(draw(image, msg, fps=meter.update(float(msg.emit_time))),
                             cv2.COLOR_RGB2BGR)
        with self._cond:
            self.received += 1
            if self._slots.get(f"{self.title}: {sid}") is not None:
                self.replaced += 1
            self._slots[f"{self.title}: {sid}"] = drawn
            self._cond.notify_all()

    def pump(self, timeout: float) -> None:
        """On the main thread: wait up to ``timeout`` seconds for a frame, show what the slots
        hold, and let the GUI handle its events (keys, a closed window). After :meth:`close`,
        destroys the windows instead."""
        with self._cond:
            if not self._slots and not self._closed:
                self._cond.wait(timeout)
            frames, self._slots = self._slots, {}
            closed = self._closed
        if closed:
            self._destroy()
            return
        for name, bgr in frames.items():
            cv2.imshow(name, bgr)
            self._windows.add(name)
            self.shown += 1
        if not self._windows:
            return
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            self.quit_requested = True
        for name in self._windows:
            try:
                visible = cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE)
            except cv2.error:  # the window is gone
                visible = -1
            if visible < 1:
                log.warning("window %r closed: ending the run", name)
                self.quit_requested = True

    def stats(self) -> dict[str, Any]:
        return {"shown": self.shown, "replaced": self.replaced}

    def close(self) -> None:
        """Called on the sink's thread: no GUI call here, the next :meth:`pump` (main thread)
        destroys the windows."""
        with self._cond:
            self._closed = True
            if self._slots:
                self.replaced += len(self._slots)
                self._slots = {}
            self._cond.notify_all()

    def _destroy(self) -> None:
        for name in self._windows:
            try:
                cv2.destroyWindow(name)
            except cv2.error:
                pass
        if self._windows:
            cv2.waitKey(1)  # let the GUI process the destruction
        self._windows.clear()
