"""Video files decoded with PyAV: every decodable frame, in order, and a clear account of the rest.

FFmpeg rarely *raises* on damaged input: a truncated file usually just ends early and a damaged
packet is concealed. A file source that silently delivers 40 % of a recording is worse than one
that fails, so damage is detected where it shows:

* a frame the decoder flags corrupt, a packet the decoder refuses, or a jump in the frame
  timestamps of more than ``GAP_FRAMES`` frame durations (a demuxer that resyncs past garbage,
  e.g. in MPEG-TS, drops packets without flagging anything) means undecodable frames (the rules
  are :class:`~norface_rt.sources.timeline.DecodeTimeline`'s, tested on timestamps alone). By default
  (``skip_corrupt=True``) they are **skipped**: their frame indices stay unused, they are counted
  in ``FramePacket.skipped`` of every later frame and listed in the ``EndOfStream``, and decoding
  carries on, so every decodable frame is delivered. A refused packet's frame is placed by the gap
  it leaves in the timestamps. With ``skip_corrupt=False`` the first corrupt frame or packet ends
  the stream there (after flushing the frames decoded from intact data before it) and timestamp
  gaps end it with an error after the last frame (the behaviour before skipping existed);
* fewer video packets than the container declares frames (``nb_frames``) means truncation
  (packets, not decoded frames, are compared: an edit list legitimately discards a few decoded
  frames, as in ``no_face.mp4``, 98 packets and 95 frames);
* for single-stream files without a frame count (Matroska, WebM), ending well before the declared
  duration means truncation;
* an error of the demuxer itself (the container can no longer be read) ends the stream.

``pts`` counts seconds from the start of the video stream (offsets such as MPEG-TS's 1.4 s are
removed); with ``loop=True`` it keeps growing across passes, like ``frame_index``. A display
matrix (``frame.rotation``) is applied, so frames are upright (:func:`norface_rt.types.upright`).

``timings[Stage.DECODE]`` covers demuxing (file reads included), decoding and the RGB conversion of
each frame; pacing in ``realtime`` mode and waiting on a full queue are excluded.

Errors read ``EndOfStream(error="decode error at frame N: ...")`` where N is the index the
first missing frame would have had. MPEG-TS declares neither, so a TS file cut exactly at a packet
boundary is indistinguishable from a shorter one; a cut inside a packet is caught by the decoder.
A file stopped before its end (``stop()``) ends with ``error="interrupted at frame N: ..."``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from norface_rt.files import slug
from norface_rt.pyav import av
from norface_rt.sources.base import DecodeClock, Source
from norface_rt.sources.timeline import DecodeTimeline
from norface_rt.types import FramePacket, Stage

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says about its first video stream (read once, at construction)."""

    codec: str
    width: int
    height: int
    fps: float | None
    declared_frames: int  # 0 when the container does not say
    duration: float | None  # seconds


class _Stopped(Exception):
    """Internal: the consumer asked the source to stop."""


class FileSource(Source):
    """Lossless (or, with ``realtime=True``, camera-like) decoding of one video file."""

    def __init__(self, path: str | os.PathLike[str], stream_id: str | None = None,
                 queue_size: int = 8, *, loop: bool = False, realtime: bool = False,
                 skip_corrupt: bool = True) -> None:
        self._path = Path(path)
        self._skip_corrupt = bool(skip_corrupt)
        if stream_id is None:
            stream_id = slug(self._path.stem)
        self._loop = bool(loop)
        self._realtime = bool(realtime)
        self._loops = 0
        self._container: Any = None
        super().__init__(stream_id, queue_size=queue_size,
                         policy="drop_oldest" if realtime else "lossless", live=self._realtime)
        if not self._path.exists():
            raise FileNotFoundError(f"video file not found: {self._path}")
        if self._path.is_dir():
            raise ValueError(f"expected a video file, got a directory: {self._path} "
                             "(image folders are read by ImageSource)")
        self._container = self._open()  # validates now; the decode thread reuses it
        try:
            self._info = self._describe(self._container)
        except Exception:
            self._release()
            raise

    @property
    def path(self) -> Path:
        return self._path

    @property
    def info(self) -> VideoInfo:
        return self._info

    @property
    def expected_frames(self) -> int | None:
        """The container's declared frame count, else its duration x frame rate (Matroska, WebM
        and MPEG-TS declare no count); None when neither is known, or when looping."""
        if self._loop:
            return None
        if self._info.declared_frames:
            return self._info.declared_frames
        if self._info.duration and self._info.fps:
            return max(1, round(self._info.duration * self._info.fps))
        return None

    @property
    def loops(self) -> int:
        """Completed passes over the file (only grows with ``loop=True``)."""
        return self._loops

    # ---- opening ----------------------------------------------------------------------------

    def _open(self) -> Any:
        try:
            container = av.open(str(self._path), mode="r")
        except av.FFmpegError as exc:
            raise ValueError(f"not a readable video file: {self._path} "
                             f"(FFmpeg: {exc.strerror or exc})") from exc
        if not container.streams.video:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
            container.close()
            raise ValueError(f"no video stream in {self._path} (expected 1 video stream, found "
                             f"streams of type: {kinds})")
        return container

    def _describe(self, container: Any) -> VideoInfo:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise ValueError(f"video stream of {self._path} has no frame size "
                             f"(width={ctx.width}, height={ctx.height}); unsupported codec?")
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(codec=ctx.name, width=int(ctx.width), height=int(ctx.height),
                         fps=float(rate) if rate else None,
                         declared_frames=int(stream.frames or 0), duration=duration)

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    # ---- decoding ---------------------------------------------------------------------------

    def _produce(self) -> str | None:
        container, self._container = self._container, None
        pts_offset = 0.0
        clock0: float | None = None  # realtime: monotonic time that corresponds to pts 0
        while True:
            first_index = self._next_index
            try:
                error, end_pts, clock0 = self._decode_pass(container, pts_offset, clock0)
            except _Stopped:
                return self._interrupted()
            finally:
                container.close()
            if self._stopping:
                return self._interrupted() if error is None else error
            if error is not None or not self._loop:
                return error
            if self._next_index == first_index:
                return f"loop: no frame decoded in pass {self._loops + 1} of {self._path}"
            self._loops += 1
            pts_offset = end_pts
            container = self._open()

    def _interrupted(self) -> str | None:
        """A file stopped before its end says so (a looping file has no end to miss)."""
        if self._loop:
            return None
        return (f"interrupted at frame {self._next_index}: stopped before the end of "
                f"{self._path.name}")

    def _decode_pass(self, container: Any, pts_offset: float,
                     clock0: float | None) -> tuple[str | None, float, float | None]:
        """One pass over the file; returns (error, pts just past the last frame, clock0)."""
        one = _Pass(self, container, pts_offset, clock0)
        error = one.run()
        return error, one.timeline.end_pts, one.clock0

    def _check_complete(self, container: Any, decoded: int, demuxed: int,
                        decoded_span: float) -> str | None:
        """Compare what decoded with what the container declared (see the module docstring)."""
        declared = self._info.declared_frames
        prefix = f"decode error at frame {self._next_index}"
        if decoded == 0:
            return f"{prefix}: no frame could be decoded from {self._path.name}"
        if declared > 0:
            if demuxed < declared:
                return (f"{prefix}: stream ended after {demuxed} of the {declared} frames "
                        f"{self._path.name} declares (file truncated?)")
            return None
        duration = container.duration / 1_000_000 if container.duration else None
        if len(container.streams) == 1 and duration and self._info.fps:
            tolerance = max(0.5, 3.0 / self._info.fps)
            if decoded_span < duration - tolerance:
                return (f"{prefix}: stream ended at {decoded_span:.2f} s of the {duration:.2f} s "
                        f"{self._path.name} declares (file truncated?)")
        return None


class _Pass:
    """One pass of a :class:`FileSource` over its container: demux, decode, hand frames on.

    The rules about missing, late and corrupt frames are :class:`DecodeTimeline`'s; this class
    applies them to what PyAV reports and keeps the source's frame indices in step (every frame
    the timeline says is missing uses an index through ``Source._skip``)."""

    def __init__(self, source: FileSource, container: Any, pts_offset: float,
                 clock0: float | None) -> None:
        self.src = source
        self.container = container
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        fps = source.info.fps
        self.frame_dur = 1.0 / fps if fps else 0.0
        self.skip = source._skip_corrupt
        self.name = source.path.name
        self.first_index = source._next_index
        self.pts_offset = pts_offset
        self.clock0 = clock0  # realtime: monotonic time that corresponds to pts 0
        self.clock = DecodeClock()
        self.timeline = DecodeTimeline(self.frame_dur, self.skip, self.first_index,
                                       end_pts=pts_offset)
        self.demuxed = 0
        # pts are made relative to the stream start (MPEG-TS starts near 1.4 s)
        self.start = 0.0
        if self.stream.start_time is not None and self.stream.time_base is not None:
            self.start = float(self.stream.start_time * self.stream.time_base)

    def run(self) -> str | None:
        self.clock.resume()  # demuxing is decode work: it is counted from here on
        try:
            error = self._demux()
        except av.FFmpegError as exc:
            return self._flush_then(f"{exc.strerror or exc} ({self.name})")
        if error is not None:
            return error
        if self.skip:  # refused packets whose frames left no gap before the end
            self.src._skip(self.timeline.unplaced())
        tl = self.timeline
        return (self.src._check_complete(self.container, tl.delivered, self.demuxed,
                                         tl.end_pts - self.pts_offset)
                or tl.end_error(self.name))

    def _demux(self) -> str | None:
        for pkt in self.container.demux(self.stream):
            if self.src._stopping:
                raise _Stopped
            if pkt.size:
                self.demuxed += 1
            if pkt.is_corrupt:
                if not self.skip:
                    where = f" at byte offset {pkt.pos}" if pkt.pos is not None else ""
                    return self._flush_then(f"corrupt packet{where} in {self.name} (file "
                                            "damaged or truncated)")
                self.timeline.corrupt_packet()
            try:
                frames = pkt.decode()
            except av.FFmpegError as exc:
                if not self.skip:
                    raise
                log.warning("source %s: the decoder refused a packet of %s (%s); its frame is "
                            "skipped", self.src.stream_id, self.name, exc.strerror or exc)
                self.src._skip(self.timeline.refused_packet())
                continue
            for frame in frames:
                if frame.is_corrupt:
                    if not self.skip:
                        return (f"decode error at frame {self.src._next_index}: the decoder "
                                f"reported a corrupt frame in {self.name} (file damaged or "
                                "truncated)")
                    self._skip_corrupt(frame)
                    continue
                self._deliver(frame)
        return None

    def _frame_pts(self, frame: Any) -> float | None:
        if frame.pts is None or frame.time_base is None:
            return None
        return float(frame.pts * frame.time_base) - self.start + self.pts_offset

    def _place_missing(self, pts: float | None) -> None:
        """Skip mode: give indices to the frames missing before one shown at ``pts``."""
        missing = self.timeline.missing_before(pts)
        if missing:
            log.warning("source %s: %d frame(s) missing before %.3f s in %s; skipped",
                        self.src.stream_id, missing, pts, self.name)
            self.src._skip(missing)

    def _deliver(self, frame: Any) -> None:
        src, tl = self.src, self.timeline
        if self.skip:
            pts = self._frame_pts(frame)
            if tl.is_late(pts):
                log.warning("source %s: a frame at %.3f s came out after %.3f s (damaged "
                            "references); left out", src.stream_id, pts, tl.prev_pts)
                return
            self._place_missing(pts)
            tl.good_frame()
        packet = FramePacket.from_av_frame(frame, src.stream_id, src._next_index, live=src.live)
        packet.timings[Stage.DECODE] = self.clock.take()
        if packet.pts is None and self.frame_dur:
            # containers without timestamps (raw streams)
            packet.pts = (packet.frame_index - self.first_index) * self.frame_dur
        elif packet.pts is not None:
            packet.pts -= self.start
        if packet.pts is not None:
            packet.pts += self.pts_offset
        if src._realtime:
            t = packet.pts if packet.pts is not None else 0.0
            if self.clock0 is None:
                self.clock0 = time.monotonic() - t
            if src._wait(self.clock0 + t - time.monotonic()):
                raise _Stopped
            packet.capture_time = time.time()  # "captured" when a camera would have sent it
        tl.deliver(packet.frame_index, packet.pts)
        if not src._emit(packet):
            raise _Stopped
        self.clock.resume()

    def _skip_corrupt(self, frame: Any) -> None:
        pts = self._frame_pts(frame)
        self._place_missing(pts)
        log.warning("source %s: the decoder reported frame %d of %s corrupt; skipped",
                    self.src.stream_id, self.src._next_index, self.name)
        self.timeline.corrupt_frame(pts)
        self.src._skip(1)

    def _flush_then(self, reason: str) -> str:
        """Deliver frames still buffered from intact data (frame threading), then fail."""
        self.clock.resume()
        try:
            for frame in self.stream.codec_context.decode(None):
                if frame.is_corrupt:
                    if not self.skip:
                        break
                    self._skip_corrupt(frame)
                    continue
                if frame.time_base is None:  # a bare flush does not stamp the time base
                    frame.time_base = self.stream.time_base
                self._deliver(frame)
        except av.FFmpegError:
            pass
        return f"decode error at frame {self.src._next_index}: {reason}"
