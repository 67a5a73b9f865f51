"""Writing RGB frames to an mp4: the one video writer (overlay sink, ``norface-rt normalize``).

H.264 (libx264, which PyPI's av wheels ship) when available, else MPEG-4 Part 2; yuv420p, so
odd frame sizes are rounded down to even. Timestamps are kept in milliseconds and follow the
frames' presentation times when given (variable frame rate: a video of a source that dropped
frames still plays at the source's speed); a frame without one, or one whose time goes backwards
(a looping source), is placed one frame interval (``1/fps``) after the previous frame.

MP4 and MOV files are written *fragmented* (a fragment at least every second, each flushed to the
file as it is written): a plain MP4 is unreadable until its index is written at close, so a
process killed with SIGKILL (or a power cut) would leave nothing playable; a fragmented one
loses at most its last second. ``delay_moov`` keeps the first frame's time (an edit list).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from norface_rt.images import check_rgb_image
from norface_rt.pyav import av

log = logging.getLogger(__name__)

CODECS: tuple[str, ...] = ("libx264", "mpeg4")
# Muxer options of fragmented MP4/MOV (see the module docstring); fragment duration in µs.
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+delay_moov+default_base_moof",
              "frag_duration": "1000000", "flush_packets": "1"}
_TIME_BASE = Fraction(1, 1000)  # output timestamps in ms: fine for any real frame rate, MPEG-4 safe


def available_codec(preferred: tuple[str, ...] = CODECS) -> str:
    """First encoder of ``preferred`` this PyAV/FFmpeg build has."""
    for name in preferred:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises UnknownCodecError (a ValueError) or FFmpegError
            continue
    raise RuntimeError(f"no video encoder available among {list(preferred)} in this PyAV build")


class Mp4Writer:
    """Encodes HxWx3 uint8 RGB frames into one video file, opened on the first frame.

    ``width``/``height`` default to the first frame's size; frames of another size are resized to
    it. ``fps`` is the nominal rate (and the step for frames without a time).
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 30.0, width: int | None = None,
                 height: int | None = None, *, codec: str | None = None, crf: int = 23) -> None:
        if not fps > 0:
            raise ValueError(f"fps: expected a number > 0, got {fps}")
        for name, v in (("width", width), ("height", height)):
            if v is not None and (not isinstance(v, int) or v < 2):
                raise ValueError(f"{name}: expected an integer >= 2 or None, got {v!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        self.fps = float(fps)
        self.width, self.height = width, height
        self.codec = codec or available_codec()
        self.crf = int(crf)
        self.frames = 0
        self._container: Any = None
        self._stream: Any = None
        self._last_ms: int | None = None
        self._closed = False

    def _open(self, w: int, h: int) -> None:
        self.width = (self.width or w) // 2 * 2
        self.height = (self.height or h) // 2 * 2
        options = FRAGMENTED if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
        self._container = av.open(str(self.path), "w", options=dict(options))
        try:
            st = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            st.width, st.height, st.pix_fmt = self.width, self.height, "yuv420p"
            st.codec_context.time_base = _TIME_BASE
            if self.codec == "libx264":
                st.options = {"preset": "veryfast", "crf": str(self.crf)}
            else:
                st.bit_rate = int(max(1_000_000, self.width * self.height * self.fps * 0.15))
        except Exception:
            self._container.close()
            raise
        self._stream = st

    def _timestamp_ms(self, pts: float | None) -> int:
        step = max(1, int(round(1000.0 / self.fps)))
        ms = int(round(pts * 1000.0)) if pts is not None else None
        if self._last_ms is None:
            ms = 0 if ms is None else ms
        elif ms is None or ms <= self._last_ms:
            ms = self._last_ms + step
        self._last_ms = ms
        return ms

    def write(self, image: np.ndarray, pts: float | None = None) -> None:
        """Append one frame shown at ``pts`` seconds (None: one interval after the last)."""
        if self._closed:
            raise RuntimeError(f"Mp4Writer({self.path}) is closed")
        check_rgb_image(image)
        if self._container is None:
            self._open(image.shape[1], image.shape[0])
        size = (int(self.width or 0), int(self.height or 0))  # set by _open
        if image.shape[:2] != (size[1], size[0]):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self._timestamp_ms(pts)
        frame.time_base = _TIME_BASE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    @property
    def opened(self) -> bool:
        """True once a frame has been written (the file exists)."""
        return self._container is not None

    def close(self) -> None:
        """Flush the encoder and finish the file; harmless twice, and without a frame no file is
        written."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
