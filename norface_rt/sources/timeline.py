"""The gap and skip rules of one pass over a video file, on timestamps alone.

A damaged file shows its damage in three ways (:mod:`norface_rt.sources.file` explains where
they come from): the decoder flags a frame corrupt, it refuses a packet, or the timestamps jump
over frames that never came out. :class:`DecodeTimeline` decides, from the presentation times of
the frames that did come out, how many frame indices each event uses up, which frames came out
late (after their slot was counted as skipped), and what error the pass ends with. It does no
decoding and owns no PyAV object, so its rules are tested with plain numbers
(tests/sources/test_source_timeline.py) instead of crafted damaged media.

Two modes: *skip* (``skip_corrupt=True``, the default) gives indices to the frames that are
missing and carries on; *strict* records timestamp gaps and ends the pass with an error after
the last frame (frames flagged corrupt or refused end a strict pass where they happen, decided
by the decoding loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAP_FRAMES = 3.0  # a timestamp jump larger than this many frame durations counts as lost frames


@dataclass
class DecodeTimeline:
    """The running account of one pass: ``frame_dur`` is one frame's duration in seconds (0 when
    the file does not say), ``first_index`` the index the pass starts at, ``end_pts`` the pts the
    pass starts at (a looping file continues its timeline). Counts of frames that use an index
    without being delivered are returned to the caller, who skips them on its stream."""

    frame_dur: float
    skip_corrupt: bool
    first_index: int
    end_pts: float = 0.0
    prev_pts: float | None = None  # presentation time of the last frame that came out
    # Skip mode: packets the decoder refused whose frames have not been placed yet (their indices
    # are found from the gap they leave in the timestamps).
    pending: int = 0
    # Skip mode: whether anything was undecodable since the last good frame. A file that ends in
    # damage was cut off there (truncated): that is an error, not a skip.
    damaged_tail: bool = False
    after_last_good: int = 0  # index of the first frame after the last one delivered
    delivered: int = 0
    # Strict mode: (pts before, pts after, index after) of each jump in the timestamps.
    gaps: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.after_last_good = self.first_index

    # ---- events ---------------------------------------------------------------------------

    def missing_before(self, pts: float | None) -> int:
        """Skip mode: how many frames are missing before one shown at ``pts`` (each uses an
        index): the frames of refused packets, or any jump of more than :data:`GAP_FRAMES`
        frame durations. 0 when nothing is missing or the times cannot tell."""
        if pts is None or self.prev_pts is None or not self.frame_dur:
            return 0
        missing = round((pts - self.prev_pts) / self.frame_dur) - 1
        if missing > 0 and (self.pending or pts - self.prev_pts > GAP_FRAMES * self.frame_dur):
            self.pending = max(0, self.pending - missing)
            return missing
        return 0

    def is_late(self, pts: float | None) -> bool:
        """Skip mode: a frame shown before the previous one (a decoder that lost reference
        frames may emit one after its slot was passed and counted as skipped): left out, so
        ``frame_index`` stays in display order."""
        return (pts is not None and self.prev_pts is not None and bool(self.frame_dur)
                and pts < self.prev_pts - 0.5 * self.frame_dur)

    def refused_packet(self) -> int:
        """Skip mode: the decoder refused a packet. Its frame is placed later by the gap it
        leaves in the timestamps; without a frame rate there is no gap to find, so it uses an
        index now (the count returned)."""
        self.damaged_tail = True
        if self.frame_dur:
            self.pending += 1
            return 0
        return 1

    def corrupt_packet(self) -> None:
        """Skip mode: a packet flagged corrupt (its frames may still decode)."""
        self.damaged_tail = True

    def corrupt_frame(self, pts: float | None) -> None:
        """Skip mode: the decoder flagged the frame shown at ``pts`` corrupt: it uses one index
        (after :meth:`missing_before` placed the frames missing before it)."""
        self.damaged_tail = True
        if pts is not None:
            self.prev_pts = pts

    def good_frame(self) -> None:
        """Skip mode: a frame decoded cleanly; damage before it was not the file's end."""
        self.damaged_tail = False

    def deliver(self, index: int, pts: float | None) -> None:
        """A frame with ``index`` shown at ``pts`` (seconds on the pass's timeline) is handed on."""
        if pts is not None:
            self.end_pts = max(self.end_pts, pts + self.frame_dur)
            if (not self.skip_corrupt and self.prev_pts is not None and self.frame_dur
                    and pts - self.prev_pts > GAP_FRAMES * self.frame_dur):
                self.gaps.append((self.prev_pts, pts, index))
            self.prev_pts = pts
        self.after_last_good = index + 1
        self.delivered += 1

    # ---- the end of the pass ---------------------------------------------------------------

    def unplaced(self) -> int:
        """Skip mode, at the end: refused packets whose frames left no gap before the end (each
        still uses an index); the count returned is taken off the account."""
        n, self.pending = self.pending, 0
        return n

    def end_error(self, name: str) -> str | None:
        """What the pass ends with when the container's own checks found nothing: a file that
        ends in undecodable data (skip mode), or the timestamp jumps (strict mode)."""
        if self.damaged_tail:
            return (f"decode error at frame {self.after_last_good}: {name} ends in undecodable "
                    "data (file truncated?)")
        if self.gaps:
            missing = sum(round((b - a) / self.frame_dur) - 1 for a, b, _ in self.gaps)
            a, b, index = self.gaps[0]
            return (f"decode error at frame {index}: about {missing} frame(s) missing from "
                    f"{name}: timestamps jump from {a:.3f} s to {b:.3f} s"
                    + (f" and {len(self.gaps) - 1} more time(s)" if len(self.gaps) > 1 else "")
                    + " (file damaged?); every decodable frame was delivered")
        return None
