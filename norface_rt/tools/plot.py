"""A picture of a run: each tracked person's emotions and chosen AUs over time.

``norface-rt plot results.jsonl --out timeline.png`` reads the frame messages of a JSONL file
(``norface-rt run --jsonl``) and draws one row per track: a face thumbnail (from ``--video``, or
from the image files an image-folder run names in ``source``), the emotion probabilities as a
stacked area over time (they sum to 1, so the area shows which emotion dominates when), and the
chosen AU intensities as lines. Tracks seen in only a few frames are left out (and counted in
the footer), so a detector's momentary false face does not get a row.

Needs matplotlib (``pip install 'norface-rt[plot]'``); drawn with the Agg canvas, never a window.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import (
    AU_DESCRIPTIONS,
    DEFAULT_AU_INTENSITY_MAX,
    EMOTION_COLORS,
    SERIES_COLORS,
)
from norface_rt.wire.schema import ProtocolError, validate

THUMB_PX = 160  # thumbnail side in pixels
MIN_TRACK_FRAMES = 3


@dataclass
class TrackSeries:
    """Everything drawn for one track (one person while tracked)."""

    stream_id: str
    track_id: int
    times: list[float] = field(default_factory=list)
    emotions: dict[str, list[float]] = field(default_factory=dict)
    aus: dict[str, list[float]] = field(default_factory=dict)
    # the frame whose face makes the best thumbnail: (score, frame_index, box, source)
    best: tuple[float, int, tuple[float, float, float, float], str | None] | None = None

    @property
    def label(self) -> str:
        return f"{self.stream_id} #{self.track_id}"


@dataclass
class RunSeries:
    """The tracks of a results file and what describes the run."""

    tracks: list[TrackSeries]
    frames: dict[str, int]  # frames per stream
    time_unit: str  # "s" (pts) or "frame"
    model_ids: set[str]
    untrained: bool
    au_max: float
    size: dict[str, tuple[int, int]]  # stream -> (width, height)
    step: dict[str, float]  # stream -> typical time between frames


def _thumb_score(face: dict[str, Any]) -> float:
    """Frontal, confident, large and flagged usable: what makes a recognisable thumbnail."""
    pose = face.get("pose") or {"yaw": 0.0, "pitch": 0.0}
    x0, y0, x1, y1 = face["box"]
    ok = (face.get("quality") or {"ok": True})["ok"]
    return (face["confidence"] + (1.0 if ok else 0.0) + 0.2 * math.log1p(max(x1 - x0, 1.0))
            - (abs(pose["yaw"]) + abs(pose["pitch"])) / 45.0)


def read_results(path: str | os.PathLike[str], stream: str | None = None) -> RunSeries:
    """Collect the tracks of a JSONL results file; malformed lines are named by line number."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"results file not found: {p} (write one with norface-rt run "
                                "--jsonl FILE)")
    by_key: dict[tuple[str, int], TrackSeries] = {}
    frames: dict[str, int] = {}
    size: dict[str, tuple[int, int]] = {}
    times_per_stream: dict[str, list[float]] = {}
    model_ids: set[str] = set()
    untrained = False
    au_max = DEFAULT_AU_INTENSITY_MAX
    has_pts = True
    msgs: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                msg = validate(json.loads(line))
            except (json.JSONDecodeError, ProtocolError) as exc:
                raise ValueError(f"{p}:{n}: not a norface-rt message ({exc})") from None
            if msg["type"] != "frame" or (stream is not None and msg["stream_id"] != stream):
                continue
            msgs.append(msg)
            if msg["pts"] is None:
                has_pts = False
    if not msgs:
        where = f" of stream {stream!r}" if stream else ""
        raise ValueError(f"{p}: no frame messages{where} (expected the JSONL of norface-rt run)")
    for msg in msgs:
        sid = msg["stream_id"]
        t = float(msg["pts"]) if has_pts else float(msg["frame_index"])
        frames[sid] = frames.get(sid, 0) + 1
        times_per_stream.setdefault(sid, []).append(t)
        if msg["width"]:
            size.setdefault(sid, (msg["width"], msg["height"]))
        untrained |= bool(msg["untrained"])
        au_max = float(msg.get("au_intensity_max", au_max))
        for face in msg["faces"]:
            model_ids.add(face["model_id"])
            key = (sid, face["track_id"])
            tr = by_key.get(key)
            if tr is None:
                tr = by_key[key] = TrackSeries(sid, face["track_id"])
            tr.times.append(t)
            for k, v in face["emotions"].items():
                tr.emotions.setdefault(k, []).append(float(v))
            for k, v in face["au_intensity"].items():
                tr.aus.setdefault(k, []).append(float(v))
            score = _thumb_score(face)
            if tr.best is None or score > tr.best[0]:
                tr.best = (score, int(msg["frame_index"]), tuple(face["box"]),
                           msg.get("source"))
    step = {sid: (float(np.median(np.diff(ts))) if len(ts) > 1 and np.any(np.diff(ts) > 0)
                  else 1.0) for sid, ts in times_per_stream.items()}
    return RunSeries(tracks=list(by_key.values()), frames=frames,
                     time_unit="s" if has_pts else "frame", model_ids=model_ids,
                     untrained=untrained, au_max=au_max, size=size, step=step)


def choose_aus(tracks: Sequence[TrackSeries], n: int = 6) -> list[str]:
    """The ``n`` AUs whose intensity varies most over the run: the ones that tell its story."""
    names = list(dict.fromkeys(a for t in tracks for a in t.aus))
    spread = {a: float(np.std(np.concatenate([np.asarray(t.aus[a]) for t in tracks
                                              if a in t.aus]))) for a in names}
    return sorted(sorted(names, key=lambda a: -spread[a])[:n], key=names.index)


def _segments(times: Sequence[float], step: float) -> list[slice]:
    """Index ranges without gaps longer than 2.5 frame steps (a track lost for a while)."""
    out, start = [], 0
    for i in range(1, len(times)):
        if times[i] - times[i - 1] > 2.5 * step:
            out.append(slice(start, i))
            start = i
    out.append(slice(start, len(times)))
    return out


def thumbnails(run: RunSeries, tracks: Sequence[TrackSeries],
               video: str | os.PathLike[str] | None) -> dict[tuple[str, int], np.ndarray]:
    """A square RGB crop of each track's best face: from ``video`` when given (decoded up to the
    last frame needed), else from the image files the frames name (image-folder runs)."""
    from norface_rt.images import read_rgb

    wanted: dict[int, list[TrackSeries]] = {}
    for t in tracks:
        if t.best is not None:
            wanted.setdefault(t.best[1], []).append(t)
    out: dict[tuple[str, int], np.ndarray] = {}
    if video is not None:
        streams = {t.stream_id for t in tracks}
        if len(streams) > 1:
            raise ValueError(f"--video: the results hold several streams {sorted(streams)}; pick "
                             "the video's with --stream")
        from norface_rt.sources.factory import open_source

        src = open_source(video)
        with src:
            for pkt in src.iter_frames(timeout=30.0):
                if pkt.frame_index in wanted:
                    expect = run.size.get(tracks[0].stream_id)
                    if expect and (pkt.width, pkt.height) != expect:
                        raise ValueError(f"--video: frames are {pkt.width}x{pkt.height}, the "
                                         f"results' are {expect[0]}x{expect[1]} (another video?)")
                    for t in wanted.pop(pkt.frame_index):
                        out[(t.stream_id, t.track_id)] = _crop(pkt.image, t.best[2])  # type: ignore[index]
                if not wanted:
                    break
        return out
    for ts in wanted.values():
        for t in ts:
            source = t.best[3] if t.best else None
            if source and Path(source).is_file():
                try:
                    out[(t.stream_id, t.track_id)] = _crop(read_rgb(source), t.best[2])  # type: ignore[index]
                except ValueError:
                    continue
    return out


def _crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = box
    side = 1.3 * max(x1 - x0, y1 - y0, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    k = THUMB_PX / side
    m = np.array([[k, 0.0, THUMB_PX / 2 - k * cx], [0.0, k, THUMB_PX / 2 - k * cy]])
    return cv2.warpAffine(image, m, (THUMB_PX, THUMB_PX), flags=cv2.INTER_AREA if k < 1
                          else cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(255, 255, 255))


def _draw_still(ax_e: Any, ax_a: Any, tr: TrackSeries, emo_names: list[str], palette: list[str],
                au_list: list[str], au_max: float) -> None:
    """One moment of one face: a bar per emotion and a bar per AU."""
    ax_e.bar(range(len(emo_names)), [tr.emotions.get(e, [0.0])[0] for e in emo_names],
             color=palette)
    ax_e.set_xticks(range(len(emo_names)), emo_names, rotation=35, ha="right", fontsize=8)
    ax_e.set_ylim(0, 1)
    ax_a.bar(range(len(au_list)), [tr.aus.get(a, [0.0])[0] for a in au_list], color="#4a7fb5")
    ax_a.set_xticks(range(len(au_list)), au_list, rotation=60, ha="right", fontsize=8)
    ax_a.set_ylim(0, au_max)


def _draw_series(ax_e: Any, ax_a: Any, tr: TrackSeries, shown: Sequence[TrackSeries],
                 run: RunSeries, emo_names: list[str], palette: list[str], au_list: list[str],
                 au_colors: dict[str, str]) -> None:
    """One face over time: stacked emotion areas and AU lines, broken where the track was
    lost (a gap is drawn as a gap, not as a straight line across it)."""
    t = np.asarray(tr.times)
    step = run.step[tr.stream_id]
    for seg in _segments(tr.times, step):
        ts = t[seg]
        ys = [np.asarray(tr.emotions.get(e, [0.0] * len(t)))[seg] for e in emo_names]
        if len(ts) == 1:  # a single frame: a bar of one frame's width
            ts = np.array([ts[0] - step / 2, ts[0] + step / 2])
            ys = [np.repeat(y, 2) for y in ys]
        ax_e.stackplot(ts, ys, colors=palette, linewidth=0)
        for a in au_list:
            if a in tr.aus:
                ax_a.plot(t[seg], np.asarray(tr.aus[a])[seg], color=au_colors[a], lw=1.4,
                          marker="o" if seg.stop - seg.start == 1 else None, ms=3)
    ax_e.set_ylim(0, 1)
    ax_a.set_ylim(0, run.au_max)
    lo = float(min(min(x.times) for x in shown if x.stream_id == tr.stream_id))
    hi = float(max(max(x.times) for x in shown if x.stream_id == tr.stream_id))
    ax_e.set_xlim(lo, hi if hi > lo else lo + step)


def plot_timeline(results: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  video: str | os.PathLike[str] | None = None, stream: str | None = None,
                  aus: Iterable[str] | None = None, max_tracks: int = 6, dpi: int = 110) -> Path:
    """Draw the timeline figure of ``results`` (a JSONL file) to ``out`` (png, svg or pdf)."""
    from norface_rt.extras import require

    require("plot", "norface-rt plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if max_tracks < 1:
        raise ValueError(f"--max-tracks must be >= 1, got {max_tracks}")
    out_path = Path(out)
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"--out: output directory does not exist: {out_path.parent}")
    run = read_results(results, stream)
    enough = [t for t in run.tracks
              if len(t.times) >= max(MIN_TRACK_FRAMES, 0.02 * run.frames[t.stream_id])
              or run.frames[t.stream_id] < MIN_TRACK_FRAMES]
    if not enough:
        raise ValueError(f"{results}: no face was tracked in at least {MIN_TRACK_FRAMES} frames; "
                         "nothing to draw")
    shown = sorted(sorted(enough, key=lambda t: -len(t.times))[:max_tracks],
                   key=lambda t: (t.stream_id, t.track_id))
    hidden = len(run.tracks) - len(shown)
    # A still (one picture, or unrelated pictures whose faces were each seen once) has no time
    # axis: its rows are bar charts of that one moment, with every AU.
    still = all(len(t.times) == 1 for t in shown)
    au_list = list(aus) if aus else (list(dict.fromkeys(a for t in shown for a in t.aus)) if still
                                     else choose_aus(shown))
    unknown = [a for a in au_list if not any(a in t.aus for t in shown)]
    if unknown:
        known = sorted({a for t in shown for a in t.aus})
        raise ValueError(f"--aus: {unknown} not in the results (they have {known})")
    thumbs = thumbnails(run, shown, video)

    n = len(shown)
    row_in, head_in, foot_in = 2.5, 0.7, 0.55
    height_in = head_in + row_in * n + foot_in
    fig = Figure(figsize=(14.5, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n, 3, width_ratios=[0.2, 1.0, 1.0], wspace=0.22, hspace=0.45,
                            left=0.015, right=0.855, top=1 - head_in / height_in,
                            bottom=foot_in / height_in)
    one_stream = len({t.stream_id for t in shown}) == 1
    emo_names = list(dict.fromkeys(e for t in shown for e in t.emotions))
    palette = [EMOTION_COLORS.get(e, SERIES_COLORS[i % len(SERIES_COLORS)])
               for i, e in enumerate(emo_names)]
    au_colors = {a: SERIES_COLORS[i % len(SERIES_COLORS)] for i, a in enumerate(au_list)}
    unit = "time (s)" if run.time_unit == "s" else "frame"
    for row, tr in enumerate(shown):
        ax_img = fig.add_subplot(grid[row, 0])
        ax_img.set_axis_off()
        thumb = thumbs.get((tr.stream_id, tr.track_id))
        if thumb is not None:
            ax_img.imshow(thumb)
        else:
            ax_img.text(0.5, 0.5, "no\nthumbnail\n(--video)", ha="center", va="center",
                        fontsize=8, color="0.5", transform=ax_img.transAxes)
        ax_img.set_title(f"#{tr.track_id}" if one_stream else tr.label, fontsize=11,
                         loc="center", fontweight="bold")
        seen = (f"frame {int(tr.times[0])}" if still and run.time_unit == "frame"
                else f"{len(tr.times)} frame{'s' if len(tr.times) != 1 else ''}")
        ax_img.text(0.5, -0.04, seen, ha="center", va="top", fontsize=8, color="0.4",
                    transform=ax_img.transAxes)
        ax_e = fig.add_subplot(grid[row, 1])
        ax_a = fig.add_subplot(grid[row, 2]) if still else fig.add_subplot(grid[row, 2],
                                                                             sharex=ax_e)
        if still:
            _draw_still(ax_e, ax_a, tr, emo_names, palette, au_list, run.au_max)
        else:
            _draw_series(ax_e, ax_a, tr, shown, run, emo_names, palette, au_list, au_colors)
        for ax in (ax_e, ax_a):
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.25, lw=0.6)
        ax_e.set_ylabel("emotion prob.", fontsize=9)
        ax_a.set_ylabel("AU intensity", fontsize=9)
        if row == n - 1 and not still:
            ax_e.set_xlabel(unit, fontsize=9)
            ax_a.set_xlabel(unit, fontsize=9)
        if row == 0:
            ax_e.set_title("emotion probabilities" if still
                           else "emotions (stacked, sum to 1)", fontsize=10)
            ax_a.set_title(f"AU intensity (0..{run.au_max:g})", fontsize=10)
    emo_handles = [Patch(color=c, label=e) for e, c in zip(emo_names, palette)]
    au_handles = [Patch(color=au_colors[a], label=f"{a} {AU_DESCRIPTIONS.get(a, '')}".strip())
                  for a in au_list]
    if not still:  # bar charts name their bars on the axes
        fig.legend(handles=emo_handles, loc="upper left", bbox_to_anchor=(0.865, 0.98),
                   fontsize=8, title="emotions", title_fontsize=9, frameon=False)
        fig.legend(handles=au_handles, loc="lower left", bbox_to_anchor=(0.865, 0.02),
                   fontsize=8, title="AUs", title_fontsize=9, frameon=False)
    streams = sorted({t.stream_id for t in shown})
    title = (f"{', '.join(streams)}  ({Path(results).name}; model "
             f"{', '.join(sorted(run.model_ids)) or '?'})")
    if run.untrained:
        title += "  (UNTRAINED MODEL: the numbers are meaningless)"
    fig.suptitle(title, fontsize=11, x=0.02, ha="left", color="#b00000" if run.untrained else "k")
    notes = []
    if hidden:
        notes.append(f"{hidden} other track(s) not shown (seen in fewer frames; --max-tracks)")
    if notes:
        fig.text(0.02, 0.005, "; ".join(notes), fontsize=8, color="0.4")
    fig.savefig(out_path, dpi=dpi)
    return out_path
