"""Every source stamps ``timings["decode"]``: decode work only, never queue or pacing waits."""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from norface_rt.sources import FileSource, ImageSource, RTSPSource
from norface_rt.sources.base import DecodeClock
from norface_rt.types import EndOfStream, FramePacket

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]  # fixture `drain`
Take = Callable[..., list[FramePacket]]  # fixture `take`

pytestmark = pytest.mark.timeout(60)


def assert_decode_timed(packets: list[FramePacket]) -> None:
    assert packets
    for p in packets:
        d = p.timings.get("decode")
        assert isinstance(d, float), (p.frame_index, p.timings)
        assert 0.0 < d < 1.0, (p.frame_index, d)


def test_decode_clock_counts_only_between_resume_and_pause() -> None:
    clock = DecodeClock()
    assert clock.take() == 0.0  # never started
    clock.resume()
    time.sleep(0.02)
    clock.pause()
    time.sleep(0.25)  # e.g. blocked on a full queue: not counted
    clock.resume()
    clock.resume()  # idempotent: does not restart the interval
    time.sleep(0.01)
    spent = clock.take()
    assert 0.03 <= spent < 0.25, spent
    time.sleep(0.05)
    assert clock.take() == 0.0  # take() resets and leaves the clock paused


def test_file_source_times_every_frame(media_dir: Path, drain: Drain) -> None:
    with FileSource(media_dir / "single_face.mp4") as src:
        packets, eos = drain(src)
    assert eos.error is None and len(packets) == 72
    assert_decode_timed(packets)


def test_file_decode_time_excludes_a_blocked_queue(media_dir: Path, take: Take) -> None:
    """A consumer 0.1 s per frame keeps the decode thread blocked in put(); not decode time."""
    with FileSource(media_dir / "single_face.mp4", queue_size=1) as src:
        packets = take(src, 2, 5.0)
        for _ in range(8):
            time.sleep(0.1)
            packets += take(src, 1, 5.0)
    assert_decode_timed(packets)
    later = [p.timings["decode"] for p in packets[2:]]  # decoded while the queue was full
    assert statistics.median(later) < 0.05, later


def test_realtime_decode_time_excludes_pacing(media_dir: Path, take: Take) -> None:
    with FileSource(media_dir / "single_face.mp4", realtime=True) as src:
        packets = take(src, 12, deadline_s=10.0)
    assert_decode_timed(packets)
    # frames are released every 1/30 s; a 640x360 frame decodes in a few ms
    assert statistics.median(p.timings["decode"] for p in packets) < 0.025


def test_image_source_times_single_images_and_folders(media_dir: Path, tmp_path: Path,
                                                      drain: Drain) -> None:
    with ImageSource(media_dir / "single_face.jpg") as src:  # decoded at construction
        packets, eos = drain(src)
    assert eos.error is None and len(packets) == 1
    assert_decode_timed(packets)

    shutil.copy(media_dir / "astronaut.png", tmp_path / "a.png")
    (tmp_path / "b_broken.jpg").write_bytes(b"not an image")
    shutil.copy(media_dir / "multi_face.jpg", tmp_path / "c.jpg")
    with ImageSource(tmp_path, queue_size=1) as src:
        packets, eos = drain(src)
    assert eos.error is not None and "b_broken.jpg" in eos.error
    # the unreadable file is a flagged frame (its failed decode timed too), indices unshifted
    assert [p.frame_index for p in packets] == [0, 1, 2]
    assert [p.error is None for p in packets] == [True, False, True]
    assert_decode_timed(packets)


@pytest.mark.rtsp
def test_rtsp_decode_time_excludes_waiting_for_packets(rtsp_server: Any, take: Take) -> None:
    with RTSPSource(rtsp_server.url, open_timeout=10.0, read_timeout=5.0) as src:
        packets = take(src, 15, deadline_s=20.0)
    assert_decode_timed(packets)
    # the camera sends a frame every ~33 ms; decoding a 320x180 frame takes ~1 ms
    assert statistics.median(p.timings["decode"] for p in packets) < 0.02
