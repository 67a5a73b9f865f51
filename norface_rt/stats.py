"""Per-stage latency and throughput accounting.

Samples are kept in bounded windows so a pipeline that runs for days has constant memory; the
percentiles therefore describe the most recent ``window`` samples of each stage.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from norface_rt.types import Stage

# Stage names in pipeline order (the summary table lists them so).
STAGES: tuple[str, ...] = tuple(s.value for s in Stage)


class StageStats:
    """Thread-safe collector of per-stage durations (seconds) and per-stream counters."""

    def __init__(self, window: int = 20_000) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._window = window
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}
        self._streams: dict[str, dict[str, Any]] = {}
        self._t0 = time.perf_counter()
        self._frames = 0
        self._faces = 0
        self._providers: list[Callable[[], Mapping[str, Any]]] = []

    def attach(self, provider: Callable[[], Mapping[str, Any]]) -> None:
        """Add live fields to every snapshot: ``provider()`` returns ``{"streams": {id: {...}}}``
        (merged into each stream's counters: connection state, skipped frames, ...) and any
        other top-level keys (e.g. ``sinks``). Called outside the lock, from the caller's thread."""
        self._providers.append(provider)

    def add(self, stage: str, seconds: float) -> None:
        stage = str(stage)  # a Stage and its plain name are one key
        with self._lock:
            dq = self._samples.get(stage)
            if dq is None:
                dq = self._samples[stage] = deque(maxlen=self._window)
            dq.append(float(seconds))
            self._counts[stage] = self._counts.get(stage, 0) + 1

    def add_many(self, timings: Mapping[Stage, float] | Mapping[str, float]) -> None:
        for k, v in timings.items():
            self.add(k, v)

    def frame_done(self, stream_id: str, faces: int, dropped: int) -> None:
        with self._lock:
            self._frames += 1
            self._faces += faces
            s = self._streams.setdefault(stream_id, {"frames": 0, "faces": 0, "dropped_frames": 0,
                                                     "ended": False, "error": None})
            s["frames"] += 1
            s["faces"] += faces
            s["dropped_frames"] = int(dropped)

    def stream_ended(self, stream_id: str, dropped: int, error: str | None) -> None:
        with self._lock:
            s = self._streams.setdefault(stream_id, {"frames": 0, "faces": 0, "dropped_frames": 0,
                                                     "ended": False, "error": None})
            s["ended"] = True
            s["error"] = error
            s["dropped_frames"] = int(dropped)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict (the payload of the ``stats`` message)."""
        snap = self._counters()
        for provider in self._providers:
            extra = dict(provider())
            for sid, fields in extra.pop("streams", {}).items():
                counters = snap["streams"].setdefault(sid, {"frames": 0, "faces": 0,
                                                             "dropped_frames": 0, "ended": False,
                                                             "error": None})
                counters.update({k: v for k, v in fields.items() if k not in counters})
            snap.update(extra)
        return snap

    def _counters(self) -> dict[str, Any]:
        with self._lock:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            stages: dict[str, dict[str, float]] = {}
            for name, dq in self._samples.items():
                arr = np.fromiter(dq, dtype=np.float64, count=len(dq))
                stages[name] = {
                    "p50_ms": float(np.percentile(arr, 50) * 1000.0) if len(arr) else 0.0,
                    "p95_ms": float(np.percentile(arr, 95) * 1000.0) if len(arr) else 0.0,
                    "mean_ms": float(arr.mean() * 1000.0) if len(arr) else 0.0,
                    "count": int(self._counts[name]),
                }
            return {
                "elapsed_s": float(elapsed),
                "frames": int(self._frames),
                "faces": int(self._faces),
                "fps": float(self._frames / elapsed),
                "faces_per_s": float(self._faces / elapsed),
                "stages": stages,
                "streams": {k: dict(v) for k, v in self._streams.items()},
            }

    def summary_table(self) -> str:
        snap = self.snapshot()
        order = [s for s in STAGES if s in snap["stages"]] + sorted(
            s for s in snap["stages"] if s not in STAGES)
        lines = [f"{snap['frames']} frames, {snap['faces']} faces in {snap['elapsed_s']:.2f} s "
                 f"({snap['fps']:.1f} frames/s, {snap['faces_per_s']:.1f} faces/s)",
                 f"{'stage':<10} {'p50 ms':>8} {'p95 ms':>8} {'count':>8}"]
        for name in order:
            st = snap["stages"][name]
            lines.append(f"{name:<10} {st['p50_ms']:>8.2f} {st['p95_ms']:>8.2f} {st['count']:>8d}")
        for sid, s in snap["streams"].items():
            err = f", error: {s['error']}" if s["error"] else ""
            more = "".join(f", {s[k]} {label}" for k, label in (
                ("skipped_frames", "skipped (undecodable)"), ("lost_frames", "lost (outages)"),
                ("reconnects", "reconnects")) if s.get(k))
            if s.get("outage_s"):
                more += f", {s['outage_s']:.1f} s disconnected"
            if s.get("last_error") and not s["error"]:
                more += f", last error: {s['last_error']}"
            lines.append(f"stream {sid}: {s['frames']} frames, {s['faces']} faces, "
                         f"{s['dropped_frames']} dropped{more}{err}")
        for name, c in snap.get("sinks", {}).items():
            state = "stalled" if c.get("stalled") else "ok"
            unconfirmed = (f", {c['unconfirmed']} never confirmed by a consumer"
                           if c.get("unconfirmed") else "")
            lines.append(f"output {name}: {c['written']} written, {c['dropped']} lost (buffer "
                         f"full), {c['failed']} failed{unconfirmed} ({state})")
        return "\n".join(lines)
