"""Video files decoded with PyAV: every decodable frame, in order, and a clear account of the rest.

FFmpeg rarely *raises* on damaged input: a truncated file usually just ends early and a damaged
packet is concealed. A file source that silently delivers 40 % of a recording is worse than one
that fails, so damage is detected where it shows:

* a frame the decoder flags corrupt, a packet the decoder refuses, or a jump in the frame
  timestamps of more than ``GAP_FRAMES`` frame durations (a demuxer that resyncs past garbage,
  e.g. in MPEG-TS, drops packets without flagging anything) means undecodable frames. By default
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

import av

from norface_rt.files import slug
from norface_rt.sources.base import DecodeClock, Source
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


GAP_FRAMES = 3.0  # a timestamp jump larger than this many frame durations counts as lost frames


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
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame_dur = 1.0 / self._info.fps if self._info.fps else 0.0
        skip = self._skip_corrupt
        first_index = self._next_index
        decoded = 0
        demuxed = 0
        clock = DecodeClock()
        end_pts = pts_offset
        gaps: list[tuple[float, float, int]] = []  # (pts before, pts after, index after) of jumps
        prev_pts: float | None = None
        # Skip mode: packets the decoder refused whose frames have not been placed yet (their
        # indices are found from the gap they leave in the timestamps).
        pending_errors = 0
        # Skip mode: whether anything was undecodable since the last good frame. A file that
        # ends in damage was cut off there (truncated): that is an error, not a skip.
        tail_damage = False
        after_last_good = self._next_index  # index of the first frame after the last good one
        start = 0.0  # pts are made relative to the stream start (MPEG-TS starts near 1.4 s)
        if stream.start_time is not None and stream.time_base is not None:
            start = float(stream.start_time * stream.time_base)

        def frame_pts(frame: Any) -> float | None:
            if frame.pts is None or frame.time_base is None:
                return None
            return float(frame.pts * frame.time_base) - start + pts_offset

        def place_missing(pts: float | None) -> None:
            """Skip mode: give indices to the frames missing before one shown at ``pts``."""
            nonlocal pending_errors
            if pts is None or prev_pts is None or not frame_dur:
                return
            missing = round((pts - prev_pts) / frame_dur) - 1
            if missing > 0 and (pending_errors or pts - prev_pts > GAP_FRAMES * frame_dur):
                log.warning("source %s: %d frame(s) missing before %.3f s in %s; skipped",
                            self.stream_id, missing, pts, self._path.name)
                self._skip(missing)
                pending_errors = max(0, pending_errors - missing)

        def damaged() -> None:
            nonlocal tail_damage
            tail_damage = True

        def deliver(frame: Any) -> None:
            nonlocal decoded, end_pts, clock0, prev_pts, tail_damage, after_last_good
            if skip:
                pts = frame_pts(frame)
                if (pts is not None and prev_pts is not None and frame_dur
                        and pts < prev_pts - 0.5 * frame_dur):
                    # A decoder that lost reference frames may emit one late, after its slot
                    # was passed (and counted as skipped): keep frame_index in display order.
                    log.warning("source %s: a frame at %.3f s came out after %.3f s (damaged "
                                "references); left out", self.stream_id, pts, prev_pts)
                    return
                place_missing(pts)
                tail_damage = False
            packet = FramePacket.from_av_frame(frame, self.stream_id, self._next_index,
                                               live=self.live)
            packet.timings[Stage.DECODE] = clock.take()
            if packet.pts is None and frame_dur:
                # containers without timestamps (raw streams)
                packet.pts = (packet.frame_index - first_index) * frame_dur
            elif packet.pts is not None:
                packet.pts -= start
            if packet.pts is not None:
                packet.pts += pts_offset
                end_pts = max(end_pts, packet.pts + frame_dur)
                # Damage the demuxer skips silently (e.g. garbage inside MPEG-TS) shows up only as
                # a jump in the timestamps: more than GAP_FRAMES frame durations means frames lost.
                if (not skip and prev_pts is not None and frame_dur
                        and packet.pts - prev_pts > GAP_FRAMES * frame_dur):
                    gaps.append((prev_pts, packet.pts, packet.frame_index))
                prev_pts = packet.pts
            if self._realtime:
                t = packet.pts if packet.pts is not None else 0.0
                if clock0 is None:
                    clock0 = time.monotonic() - t
                if self._wait(clock0 + t - time.monotonic()):
                    raise _Stopped
                packet.capture_time = time.time()  # "captured" when a camera would have sent it
            if not self._emit(packet):
                raise _Stopped
            after_last_good = packet.frame_index + 1
            decoded += 1
            clock.resume()

        def skip_corrupt_frame(frame: Any) -> None:
            nonlocal prev_pts
            pts = frame_pts(frame)
            place_missing(pts)
            log.warning("source %s: the decoder reported frame %d of %s corrupt; skipped",
                        self.stream_id, self._next_index, self._path.name)
            damaged()
            self._skip(1)
            if pts is not None:
                prev_pts = pts

        def flush_then(reason: str) -> str:
            """Deliver frames still buffered from intact data (frame threading), then fail."""
            clock.resume()
            try:
                for frame in stream.codec_context.decode(None):
                    if frame.is_corrupt:
                        if not skip:
                            break
                        skip_corrupt_frame(frame)
                        continue
                    if frame.time_base is None:  # a bare flush does not stamp the time base
                        frame.time_base = stream.time_base
                    deliver(frame)
            except av.FFmpegError:
                pass
            return f"decode error at frame {self._next_index}: {reason}"

        clock.resume()  # demuxing is decode work: it is counted from here on
        try:
            for pkt in container.demux(stream):
                if self._stopping:
                    raise _Stopped
                if pkt.size:
                    demuxed += 1
                if pkt.is_corrupt:
                    if not skip:
                        where = f" at byte offset {pkt.pos}" if pkt.pos is not None else ""
                        return (flush_then(f"corrupt packet{where} in {self._path.name} "
                                           "(file damaged or truncated)"), end_pts, clock0)
                    damaged()
                try:
                    frames = pkt.decode()
                except av.FFmpegError as exc:
                    if not skip:
                        raise
                    log.warning("source %s: the decoder refused a packet of %s (%s); its frame "
                                "is skipped", self.stream_id, self._path.name,
                                exc.strerror or exc)
                    damaged()
                    if frame_dur:
                        pending_errors += 1  # placed by the gap it leaves in the timestamps
                    else:
                        self._skip(1)
                    continue
                for frame in frames:
                    if frame.is_corrupt:
                        if not skip:
                            return (f"decode error at frame {self._next_index}: the decoder "
                                    f"reported a corrupt frame in {self._path.name} (file "
                                    "damaged or truncated)", end_pts, clock0)
                        skip_corrupt_frame(frame)
                        continue
                    deliver(frame)
        except av.FFmpegError as exc:
            return flush_then(f"{exc.strerror or exc} ({self._path.name})"), end_pts, clock0
        if skip and pending_errors:  # refused packets whose frames left no gap before the end
            self._skip(pending_errors)

        error = self._check_complete(container, decoded, demuxed, end_pts - pts_offset)
        if error is None and tail_damage:
            error = (f"decode error at frame {after_last_good}: {self._path.name} ends in "
                     "undecodable data (file truncated?)")
        if error is None and gaps:
            missing = sum(round((b - a) / frame_dur) - 1 for a, b, _ in gaps)
            a, b, index = gaps[0]
            error = (f"decode error at frame {index}: about {missing} frame(s) missing from "
                     f"{self._path.name}: timestamps jump from {a:.3f} s to {b:.3f} s"
                     + (f" and {len(gaps) - 1} more time(s)" if len(gaps) > 1 else "")
                     + " (file damaged?); every decodable frame was delivered")
        return error, end_pts, clock0

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
