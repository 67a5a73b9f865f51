"""FileSource on real media: exact frame delivery, damaged files, pacing, looping and stopping."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from norface_rt.sources import FileSource
from norface_rt.types import EndOfStream, FramePacket

Drain = Callable[..., tuple[list[FramePacket], EndOfStream]]  # fixture `drain`
Take = Callable[..., list[FramePacket]]  # fixture `take`


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def remux(src: Path, dst: Path, fmt: str | None = None) -> Path:
    """Copy the video packets of ``src`` into another container without re-encoding."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=fmt) as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        for pkt in inp.demux(stream):
            if pkt.dts is None:
                continue
            pkt.stream = ostream
            out.mux(pkt)
    return dst


def reference_frames(path: Path, n: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return frames


def reference_digests(path: Path, upto: int) -> dict[int, str]:
    """Display slot (frames since the first) -> digest of each intact-file frame up to ``upto``."""
    out: dict[int, str] = {}
    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        assert rate is not None
        fps = float(rate)
        t0: float | None = None
        for frame in c.decode(video=0):
            assert frame.pts is not None and frame.time_base is not None
            t = float(frame.pts * frame.time_base)
            t0 = t if t0 is None else t0
            slot = round((t - t0) * fps)
            if slot > upto:
                break
            out[slot] = digest(frame.to_ndarray(format="rgb24"))
    return out


def assert_intact_prefix(packets: list[FramePacket], full: Path, fps: float) -> None:
    """Each delivered frame is pixel-identical to the intact file's frame at the same time, and
    (in display order) at most the B-frames whose data lay beyond the cut are missing."""
    t0 = packets[0].pts  # containers may shift timestamps (MPEG-TS starts near 1.4 s)
    got = {round((p.pts - t0) * fps): digest(p.image) for p in packets}  # type: ignore[operator]
    assert len(got) == len(packets)
    ref = reference_digests(full, max(got))
    assert set(got) <= set(ref)
    assert all(got[t] == ref[t] for t in got)
    assert len(ref) - len(got) <= 2


def digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()


def assert_contiguous(packets: list[FramePacket]) -> None:
    assert [p.frame_index for p in packets] == list(range(len(packets)))


def test_single_face_delivers_exactly_72_frames_then_one_clean_end(media_dir: Path,
                                                                    drain: Drain) -> None:
    src = FileSource(media_dir / "single_face.mp4")
    assert src.stream_id == "single_face"
    assert (src.live, src.policy) == (False, "lossless")
    assert (src.info.width, src.info.height, src.info.declared_frames) == (640, 360, 72)
    with src:
        packets, eos = drain(src)
        assert src.read(0.5) is None  # exactly one EndOfStream, nothing after it
    assert len(packets) == 72
    assert_contiguous(packets)
    pts = [p.pts for p in packets]
    assert all(isinstance(t, float) for t in pts)
    assert all(b > a for a, b in zip(pts, pts[1:]))  # type: ignore[operator]
    assert pts[0] == pytest.approx(0.0, abs=1e-6) and pts[-1] == pytest.approx(71 / 30, abs=0.02)
    first = packets[0]
    assert first.image.shape == (360, 640, 3) and first.image.dtype == np.uint8
    assert first.image.flags["C_CONTIGUOUS"]
    assert (first.stream_id, first.live, first.dropped) == ("single_face", False, 0)
    assert all(p.capture_time > 0 for p in packets)
    assert eos == EndOfStream(stream_id="single_face", frames=72, dropped=0, error=None)
    assert (src.frames, src.dropped) == (72, 0)
    # pixel-exact with a plain PyAV decode (catches colour-conversion or ordering mistakes)
    ref = reference_frames(media_dir / "single_face.mp4", 3)
    for p, r in zip(packets[:3], ref):
        np.testing.assert_array_equal(p.image, r)


def test_truncated_mp4_with_index_first_delivers_every_intact_frame_then_an_error(
        media_dir: Path, tmp_path: Path, drain: Drain) -> None:
    # WolfgangLanger_Pexels.mp4 has its moov atom at the start, so a cut file still opens.
    full = media_dir / "WolfgangLanger_Pexels.mp4"
    cut = truncate(full, tmp_path / "cut.mp4", 0.4)
    with FileSource(cut, "cut") as src:
        packets, eos = drain(src)
    n = len(packets)
    assert 0.3 * 472 < n < 472, n
    assert_contiguous(packets)
    assert eos.error is not None
    assert_decode_error_at_or_before(eos, n)
    assert "472" in eos.error and "truncated" in eos.error
    assert eos.frames == n
    assert_intact_prefix(packets, full, src.info.fps)  # type: ignore[arg-type]


def test_truncated_mp4_with_index_last_fails_at_construction(media_dir: Path,
                                                              tmp_path: Path) -> None:
    # single_face.mp4 keeps its moov atom at the end: a cut copy has no index at all.
    cut = truncate(media_dir / "single_face.mp4", tmp_path / "cut_moov_end.mp4", 0.4)
    with pytest.raises(ValueError, match=r"not a readable video file: .*cut_moov_end\.mp4"):
        FileSource(cut)


def assert_decode_error_at_or_before(eos: EndOfStream, n: int) -> None:
    """The error names the first missing frame: the end (n) for a clean cut, or earlier when the
    frames just before the cut were lost too (B-frame reordering leaves a timestamp gap)."""
    import re

    m = re.match(r"decode error at frame (\d+): ", eos.error or "")
    assert m is not None and int(m.group(1)) <= n, eos.error


@pytest.mark.parametrize("fmt,suffix", [("matroska", ".mkv"), ("mpegts", ".ts")])
def test_truncated_stream_containers_end_with_an_error_after_the_intact_frames(
        media_dir: Path, tmp_path: Path, drain: Drain, fmt: str, suffix: str) -> None:
    whole = remux(media_dir / "single_face.mp4", tmp_path / f"whole{suffix}", fmt)
    with FileSource(whole) as src:  # the remux itself is complete and clean
        packets, eos = drain(src)
    assert (len(packets), eos.error) == (72, None)

    cut = truncate(whole, tmp_path / f"cut{suffix}", 0.4)
    with FileSource(cut) as src:
        packets, eos = drain(src)
    n = len(packets)
    assert 10 <= n < 72, n
    assert_contiguous(packets)
    assert_decode_error_at_or_before(eos, n)
    assert_intact_prefix(packets, media_dir / "single_face.mp4", 30.0)


def garbage_in_the_middle(media_dir: Path, tmp_path: Path, fmt: str | None, suffix: str) -> Path:
    """single_face in another container with 4000 random bytes at 40 % of the file."""
    src_file = media_dir / "single_face.mp4"
    whole = src_file if fmt is None else remux(src_file, tmp_path / f"whole{suffix}", fmt)
    data = bytearray(whole.read_bytes())
    at = int(len(data) * 0.4)
    data[at:at + 4000] = np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes()
    damaged = tmp_path / f"damaged{suffix}"
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize("fmt,suffix", [(None, ".mp4"), ("matroska", ".mkv"),
                                        ("mpegts", ".ts")])
def test_garbage_in_the_middle_ends_with_an_error_after_the_intact_frames_when_strict(
        media_dir: Path, tmp_path: Path, drain: Drain, fmt: str | None, suffix: str) -> None:
    # three different detectors fire here: FFmpeg raises (mp4), the decoder flags a corrupt
    # frame (mkv), the demuxer flags a corrupt packet (ts)
    src_file = media_dir / "single_face.mp4"
    damaged = garbage_in_the_middle(media_dir, tmp_path, fmt, suffix)
    with FileSource(damaged, skip_corrupt=False) as src:
        packets, eos = drain(src)
    n = len(packets)
    assert 10 <= n < 72, n
    assert_contiguous(packets)
    assert_decode_error_at_or_before(eos, n)
    assert f"damaged{suffix}" in eos.error  # names the file
    assert_intact_prefix(packets, src_file, 30.0)
    assert eos.skipped == 0


@pytest.mark.parametrize("fmt,suffix", [(None, ".mp4"), ("matroska", ".mkv"),
                                        ("mpegts", ".ts")])
def test_garbage_in_the_middle_is_skipped_and_every_decodable_frame_delivered(
        media_dir: Path, tmp_path: Path, drain: Drain, fmt: str | None, suffix: str) -> None:
    damaged = garbage_in_the_middle(media_dir, tmp_path, fmt, suffix)
    with FileSource(damaged, skip_corrupt=False) as src:
        strict, _ = drain(src)
    with FileSource(damaged) as src:
        packets, eos = drain(src)
    if suffix == ".mkv":
        # The garbage breaks Matroska's cluster chain, so neither mode gets past it; whether the
        # decoder flags the last frame before it corrupt depends on frame threading (seen both
        # ways: strict 19 / skip 20 + 1 skipped here, strict 21 / skip 20 in a CI run on a loaded
        # machine). What must hold: every frame strict mode reached is delivered or counted.
        assert len(packets) + eos.skipped >= len(strict)
    else:
        assert len(packets) > len(strict)  # decoding went on past the damage
    idx = [p.frame_index for p in packets]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert len(eos.skipped_indices) == eos.skipped
    assert eos.skipped >= 1 or suffix == ".mkv"  # (mkv: see above)
    # a skipped frame keeps its index: delivered and skipped indices are disjoint, and each
    # frame after a skip carries the count so far
    assert not set(idx) & set(eos.skipped_indices)
    first_skip = eos.skipped_indices[0] if eos.skipped else len(packets)
    assert all(p.skipped == 0 for p in packets if p.frame_index < first_skip)
    assert packets[-1].skipped == eos.skipped
    if suffix == ".mkv":  # the garbage breaks Matroska's cluster chain: the rest is unreachable
        assert eos.error is not None and "truncated" in eos.error
    else:  # the timeline is whole again: every frame delivered or skipped, no error
        assert eos.error is None
        assert len(packets) + eos.skipped == 72 and idx[-1] == 71
        # each frame sits at its own place in the timeline: index = time x frame rate
        # (single_face.mp4 has one keyframe, so frames after the damage are predicted from
        # damaged ones; pixels cannot be compared, positions can)
        t0 = packets[0].pts
        assert all(abs((p.pts - t0) * 30 - p.frame_index) < 0.5 for p in packets)  # type: ignore[operator]


def test_a_flipped_sector_costs_one_frame_not_the_rest_of_the_file(
        flipped_sector_video: tuple[Path, int], drain: Drain) -> None:
    bad, corrupt = flipped_sector_video
    with FileSource(bad) as src:
        packets, eos = drain(src)
    assert eos.error is None and eos.skipped_indices == (corrupt,)
    assert [p.frame_index for p in packets] == [i for i in range(72) if i != corrupt]
    with FileSource(bad, skip_corrupt=False) as src:  # the old behaviour, on request
        strict, eos = drain(src)
    assert len(strict) == corrupt and eos.error is not None
    assert eos.error.startswith(f"decode error at frame {corrupt}: ")


def test_missing_file_raises_file_not_found_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=f"video file not found: {missing}"):
        FileSource(missing)


def test_non_video_files_raise_value_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match=r"not a readable video file: .*notes\.mp4"):
        FileSource(text)
    with pytest.raises(ValueError, match=r"expected a video file, got a directory"):
        FileSource(tmp_path)

    audio = tmp_path / "tone.wav"  # a real media file, but without a video stream
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.rate = 8000
        frame.time_base = Fraction(1, 8000)
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(ValueError, match=r"no video stream in .*tone\.wav \(expected 1 video "
                                         r"stream, found streams of type: audio\)"):
        FileSource(audio)


def test_bad_arguments_are_rejected(media_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"queue_size must be an int >= 1, got 0"):
        FileSource(media_dir / "single_face.mp4", queue_size=0)
    with pytest.raises(ValueError, match=r"stream_id must be a non-empty string"):
        FileSource(media_dir / "single_face.mp4", "  ")
    src = FileSource(media_dir / "single_face.mp4")
    with pytest.raises(RuntimeError, match=r"call start\(\) before read\(\)"):
        src.read(0.1)
    src.start()
    try:
        with pytest.raises(ValueError, match=r"timeout must be a number >= 0 \(seconds\), got -1"):
            src.read(-1)
        with pytest.raises(RuntimeError, match=r"already started"):
            src.start()
    finally:
        assert src.stop(5.0)


def test_stop_with_a_slow_consumer_returns_promptly_and_leaves_the_end_marker(
        media_dir: Path) -> None:
    src = FileSource(media_dir / "single_face.mp4", queue_size=2).start()
    first = src.read(5.0)
    assert isinstance(first, FramePacket) and first.frame_index == 0
    time.sleep(0.3)  # the decoder has filled the queue and is blocked in a lossless put
    assert src.running
    t0 = time.monotonic()
    assert src.stop(timeout=2.0) is True
    assert time.monotonic() - t0 < 1.0
    assert not src.running
    eos = src.read(1.0)  # queued frames were discarded; the end marker survives
    assert isinstance(eos, EndOfStream) and eos.frames < 72
    # a file stopped before its end says so (a clean end would claim the whole file)
    assert eos.error is not None and eos.error.startswith("interrupted at frame ")
    assert src.read(0.1) is None


def test_stop_before_start_releases_the_file(media_dir: Path) -> None:
    src = FileSource(media_dir / "single_face.mp4")
    assert src.stop(1.0) is True


def test_realtime_paces_frames_at_their_timestamps(media_dir: Path, take: Take) -> None:
    src = FileSource(media_dir / "single_face.mp4", realtime=True)
    assert (src.live, src.policy) == (True, "drop_oldest")
    with src:
        t0 = time.monotonic()
        packets = take(src, 16, deadline_s=10.0)
        elapsed = time.monotonic() - t0
    assert all(p.live for p in packets)
    span = packets[-1].pts - packets[0].pts  # type: ignore[operator]
    assert span == pytest.approx(15 / 30, abs=0.01)
    assert elapsed >= span - 0.05  # not faster than the recording
    first = packets[0]
    assert first.pts is not None
    for p in packets[1:]:  # no frame is released before its time; none lags far behind it
        assert p.pts is not None
        lag = (p.capture_time - first.capture_time) - (p.pts - first.pts)
        assert -0.02 <= lag < 0.4, (p.frame_index, lag)


def test_realtime_with_a_slow_consumer_drops_the_oldest_frames(media_dir: Path,
                                                               take: Take) -> None:
    with FileSource(media_dir / "single_face.mp4", queue_size=2, realtime=True) as src:
        packets = [take(src, 1, 5.0)[0]]
        for _ in range(3):
            time.sleep(0.25)  # ~7 frames arrive per pause; only the newest 2 are kept
            packets += take(src, 1, 5.0)
    dropped = [p.dropped for p in packets]
    assert dropped[-1] > 0 and dropped == sorted(dropped)
    assert src.dropped >= dropped[-1]
    idx = [p.frame_index for p in packets]
    assert all(b > a for a, b in zip(idx, idx[1:]))
    assert idx[-1] - idx[0] >= 12  # gaps where frames were evicted


def test_loop_continues_indices_and_timestamps_across_passes(media_dir: Path,
                                                             take: Take) -> None:
    with FileSource(media_dir / "single_face.mp4", loop=True) as src:
        packets = take(src, 100, deadline_s=20.0)
    assert_contiguous(packets)
    pts = [p.pts for p in packets]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # type: ignore[operator]
    assert pts[72] == pytest.approx(2.4, abs=0.02)  # second pass starts one frame after the first
    assert src.loops >= 1
    np.testing.assert_array_equal(packets[72].image, packets[0].image)


def make_gap_ts(media_dir: Path, out: Path) -> Path:
    """single_face as MPEG-TS without 20 of its packets (non-key frames of one GOP tail)."""
    with av.open(str(media_dir / "single_face.mp4")) as src, av.open(str(out), "w", format="mpegts") as dst:
        vout = dst.add_stream_from_template(src.streams.video[0])
        for i, pkt in enumerate(src.demux(src.streams.video[0])):
            if pkt.dts is None:
                continue
            if 40 <= i < 60 and not pkt.is_keyframe:
                continue  # drop 20 packets (non-key frames of one GOP tail)
            pkt.stream = vout
            dst.mux(pkt)
    return out


def test_frames_lost_without_a_corrupt_flag_are_reported(media_dir, tmp_path, drain) -> None:
    """Packets missing from a stream (as when a demuxer resyncs past garbage) leave a timestamp
    gap: strict, the source ends with an error naming it; by default the missing frames are
    skipped (counted, their indices left out) instead of being lost silently."""
    out = make_gap_ts(media_dir, tmp_path / "gap.ts")
    with FileSource(out, skip_corrupt=False) as src:
        packets, eos = drain(src)
    assert 0 < len(packets) < 72
    assert [p.frame_index for p in packets] == list(range(len(packets)))
    assert eos.error is not None and "missing" in eos.error and "timestamps jump" in eos.error

    with FileSource(out) as src:
        packets, eos = drain(src)
    assert eos.error is None and len(packets) + eos.skipped == 72
    assert sorted([p.frame_index for p in packets] + list(eos.skipped_indices)) == list(range(72))


def test_display_matrix_rotation_is_applied(media_dir: Path, sideways_video: Path,
                                            drain: Drain) -> None:
    with FileSource(sideways_video) as src:
        packets, eos = drain(src)
    assert eos.error is None and len(packets) == 24
    assert all(p.image.shape == (360, 640, 3) for p in packets)  # upright, as displayed
    ref = reference_frames(media_dir / "single_face.mp4", 24)
    diff = np.abs(packets[10].image.astype(int) - ref[10].astype(int)).mean()
    assert diff < 8, f"the upright frame differs from the original by {diff:.1f} on average"
