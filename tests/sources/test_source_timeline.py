"""The gap and skip rules of a file pass, on timestamps alone (no damaged media needed): which
frames are missing, which come out late, and what a pass ends with."""

from __future__ import annotations

import pytest

from norface_rt.sources.timeline import GAP_FRAMES, DecodeTimeline

DUR = 0.04  # 25 frames/s


def skipping(first_index: int = 0) -> DecodeTimeline:
    return DecodeTimeline(DUR, skip_corrupt=True, first_index=first_index)


def run(tl: DecodeTimeline, times: list[float]) -> list[int]:
    """Deliver frames at ``times`` the way the decoding loop does; returns the frame indices
    they get (missing frames use indices too)."""
    index, got = tl.first_index, []
    for t in times:
        index += tl.missing_before(t)
        tl.good_frame()
        tl.deliver(index, t)
        got.append(index)
        index += 1
    return got


def test_a_jump_of_more_than_gap_frames_uses_the_missing_indices() -> None:
    tl = skipping()
    assert run(tl, [0.0, 0.04, 0.08, 0.28, 0.32]) == [0, 1, 2, 7, 8]  # 4 frames missing
    assert tl.end_error("a.mp4") is None and tl.delivered == 5


def test_timestamp_jitter_below_the_threshold_is_not_a_gap() -> None:
    tl = skipping()
    # 0.08 -> 0.18 is 2.5 frame durations: under GAP_FRAMES, no frame counted missing
    assert (0.18 - 0.08) / DUR < GAP_FRAMES
    assert run(tl, [0.0, 0.04, 0.08, 0.18]) == [0, 1, 2, 3]


def test_a_refused_packet_is_placed_by_the_gap_it_leaves() -> None:
    tl = skipping()
    run(tl, [0.0, 0.04])
    assert tl.refused_packet() == 0 and tl.pending == 1  # no index yet: its place is unknown
    # the next frame comes one slot late: small for a gap, but a refused packet explains it
    assert tl.missing_before(0.12) == 1 and tl.pending == 0


def test_refused_packets_without_a_gap_before_the_end_still_count() -> None:
    tl = skipping()
    run(tl, [0.0, 0.04])
    tl.refused_packet()
    tl.refused_packet()
    assert tl.unplaced() == 2 and tl.unplaced() == 0
    # the file ends in damage: truncated, an error naming the first frame after the last good one
    assert tl.end_error("cut.mp4") == ("decode error at frame 2: cut.mp4 ends in undecodable "
                                       "data (file truncated?)")


def test_without_a_frame_rate_a_refused_packet_uses_its_index_at_once() -> None:
    tl = DecodeTimeline(0.0, skip_corrupt=True, first_index=0)
    assert tl.refused_packet() == 1
    assert tl.missing_before(5.0) == 0  # no duration: times cannot tell what is missing


def test_a_late_frame_is_left_out_and_a_corrupt_one_uses_one_index() -> None:
    tl = skipping()
    run(tl, [0.0, 0.04, 0.08])
    assert tl.is_late(0.02) and not tl.is_late(0.07) and not tl.is_late(None)
    tl.corrupt_frame(0.12)  # flagged corrupt: it moves the timeline on, and is damage...
    assert tl.prev_pts == 0.12 and tl.damaged_tail
    assert tl.missing_before(0.16) == 0  # ...so the next frame is not a gap
    tl.good_frame()
    tl.deliver(4, 0.16)
    assert tl.end_error("a.mp4") is None  # damage followed by a good frame is a skip


def test_strict_mode_records_the_jumps_and_ends_with_an_error() -> None:
    tl = DecodeTimeline(DUR, skip_corrupt=False, first_index=0)
    for i, t in enumerate([0.0, 0.04, 0.4, 0.44, 1.0]):
        tl.deliver(i, t)  # strict: nothing is skipped, every jump is recorded
    assert [g[2] for g in tl.gaps] == [2, 4]
    err = tl.end_error("ts.ts")
    assert err is not None and err.startswith("decode error at frame 2: about 21 frame(s) "
                                              "missing from ts.ts: timestamps jump from 0.040 s "
                                              "to 0.400 s and 1 more time(s)")


@pytest.mark.parametrize("offset", [0.0, 12.5])
def test_the_pass_end_follows_the_last_frame(offset: float) -> None:
    tl = DecodeTimeline(DUR, skip_corrupt=True, first_index=72, end_pts=offset)
    assert tl.after_last_good == 72
    run(tl, [offset, offset + 0.04])
    assert tl.end_pts == pytest.approx(offset + 0.08) and tl.after_last_good == 74
