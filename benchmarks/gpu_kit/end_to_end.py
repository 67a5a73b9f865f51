"""End to end without PyAV or MediaPipe: the runtime's own :class:`~norface_rt.pipeline.Pipeline`
(face threads, tracker, geometry baseline, batching inference thread, publish thread, sink
workers) fed by frames decoded beforehand and the landmarks MediaPipe found in them, with the
faces aligned on the device (``--device-align``) by the ``torch-cuda`` backend, classified, and
published to an in-process sink.

What the figure includes: everything from a frame leaving its source to its message reaching
the sink (``capture_time`` to arrival). What it leaves out: video decoding (frames are decoded
from JPEG once, before the run) and MediaPipe (its landmarks are replayed); on a real run these
cost about 4 and 8 ms per frame on a CPU core (README, "Performance"), off the GPU.

Two modes per stream count: **paced** streams deliver frames at their clip's frame rate, as
cameras do (drop-oldest queues: a stream that falls behind drops frames, counted), which is what
the latency figures mean; **unpaced** streams deliver as fast as the pipeline takes them
(lossless, back-pressure), which gives the most faces per second (latency then is mostly time
queued). Frames of the first ``warmup`` seconds of each run are left out of the figures.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_kit.inputs import Clip, Inputs, PingPong, ReplayLandmarker, load_inputs
from benchmarks.gpu_kit.measure import percentile
from benchmarks.gpu_kit.part import Part
from benchmarks.gpu_kit.settings import Settings
from norface_rt.backends.base import Backend
from norface_rt.sinks.base import ResultSink
from norface_rt.sources.base import Source
from norface_rt.types import FramePacket, FrameResult, Stage
from norface_rt.wire.messages import EosMessage, Message

MODES = ("paced", "unpaced")
STREAM_OFFSET = 11  # frames between the starting points of streams replaying the same clip
CHECK_FACES = 64  # faces compared in the device-alignment check


class ReplaySource(Source):
    """A clip replayed for ``seconds`` (forwards and backwards, :class:`PingPong`), paced at its
    frame rate like a camera (``paced``: live, drop-oldest) or as fast as it is read (lossless).
    Frames are already decoded, so ``timings[Stage.DECODE]`` is 0."""

    def __init__(self, stream_id: str, clip: Clip, schedule: PingPong, *, seconds: float,
                 paced: bool, queue_size: int = 8) -> None:
        super().__init__(stream_id, queue_size=queue_size,
                         policy="drop_oldest" if paced else "lossless", live=paced)
        if not seconds > 0:
            raise ValueError(f"seconds: expected a duration > 0, got {seconds!r}")
        self.clip = clip
        self.schedule = schedule
        self.seconds = float(seconds)
        self.paced = paced

    def _produce(self) -> str | None:
        period = 1.0 / self.clip.fps
        start = time.monotonic()
        i = 0
        while not self._stopping:
            now = time.monotonic()
            if now - start >= self.seconds:
                return None
            if self.paced and self._wait(start + i * period - now):
                return None
            index = self._next_index
            packet = FramePacket(stream_id=self.stream_id, frame_index=index,
                                 image=self.clip.frames[self.schedule(index)], pts=i * period,
                                 capture_time=time.time(), live=self.paced,
                                 timings={Stage.DECODE: 0.0})
            if not self._emit(packet):
                return None
            i += 1
        return None


class KitSink(ResultSink):
    """The in-process end of the pipeline: notes when each frame's result arrives."""

    name = "kit"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (capture_time, arrival time, faces, failed) per frame
        self.records: list[tuple[float, float, int, bool]] = []
        self.eos: dict[str, EosMessage] = {}

    def write_result(self, result: FrameResult) -> None:
        arrived = time.time()
        with self._lock:
            self.records.append((result.capture_time, arrived, len(result.faces),
                                 result.error is not None))

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        if isinstance(msg, EosMessage):
            with self._lock:
                self.eos[msg.stream_id] = msg

    def close(self) -> None:
        """Nothing to flush."""


def device_align_check(backend: Backend, inputs: Inputs, model_dir: Path) -> dict[str, Any]:
    """The error of the device path on real faces, in two parts: faces warped on the device
    against the same faces warped by OpenCV (the CPU path's uint8 crops), both classified by
    ``backend``; and the whole device path against OpenCV crops classified by PyTorch fp32."""
    from norface_rt.faces.align import Aligner
    from norface_rt.faces.geometry import blendshape_vector
    from norface_rt.reference import max_abs_errors, reference_outputs

    cfg = backend.config
    aligner = Aligner(cfg)
    items: list[tuple[np.ndarray, np.ndarray]] = []
    crops: list[np.ndarray] = []
    geo: list[np.ndarray] = []
    for clip in inputs.clips:
        for frame, faces in zip(clip.frames, clip.faces):
            if faces and sum(len(c) for c in crops) < CHECK_FACES:
                c, m = aligner.align(frame, [f.points5 for f in faces])
                items.append((frame, m))
                crops.append(c)
                if cfg.geometry_dim:
                    geo.append(np.stack([blendshape_vector(f.blendshapes, cfg.blendshape_names)
                                         for f in faces]))
    geometry = np.concatenate(geo) if geo else None
    all_crops = np.concatenate(crops)
    aligned = backend.infer_aligned_many(items, geometry=geometry)
    cpu_crops = backend.infer(all_crops, geometry=geometry)
    ref = reference_outputs(model_dir, {0: all_crops}, {0: geometry})[0]
    return {"faces": len(all_crops), "frames": len(items),
            "align_err": max_abs_errors(aligned, {k: getattr(cpu_crops, k) for k in ref}),
            "max_abs_err": max_abs_errors(aligned, ref),
            "what": "align_err: faces warped on the device against OpenCV's uint8 crops, both "
                    "classified by the backend; max_abs_err: faces warped on the device and "
                    "classified by the backend against OpenCV crops classified by PyTorch fp32"}


def run_streams(backend: Backend, inputs: Inputs, *, streams: int, paced: bool, seconds: float,
                warmup: float) -> dict[str, Any]:
    """One pipeline run of ``streams`` replayed streams; its figures."""
    from norface_rt.pipeline import Pipeline, PipelineOptions
    from norface_rt.pipeline.factory import assemble_face_stage

    defaults = PipelineOptions(sources=[])  # the run options users get by default
    clips = inputs.clips
    sources, finders = [], {}
    for i in range(streams):
        clip = clips[i % len(clips)]
        schedule = PingPong(len(clip), offset=STREAM_OFFSET * i)
        sid = f"s{i:02d}-{clip.name}"
        sources.append(ReplaySource(sid, clip, schedule, seconds=seconds, paced=paced))
        finders[sid] = ReplayLandmarker(clip, schedule)
    cfg = backend.config

    def face_stage(stream_id: str) -> Any:
        return assemble_face_stage(finders[stream_id], cfg, video=True, warp_crops=False,
                                   baseline=defaults.baseline)

    sink = KitSink()
    pipeline = Pipeline(sources, face_stage, backend, [sink], max_batch=defaults.max_batch,
                        queue_size=defaults.queue_size, stats_interval=defaults.stats_interval,
                        device_align=True, landmarks=defaults.landmarks,
                        blendshapes=defaults.blendshapes, smooth=defaults.smooth,
                        sink_buffer=defaults.sink_buffer, sink_timeout=defaults.sink_timeout)
    snap = pipeline.run(timeout=3 * seconds + 60)
    records = sorted(sink.records)
    row: dict[str, Any] = {
        "mode": "paced" if paced else "unpaced", "streams": streams, "seconds": seconds,
        "offered_frames_per_s": round(sum(s.clip.fps for s in sources), 1) if paced else None,
        "frames_made": sum(m.frames for m in sink.eos.values()),
        "frames_dropped": sum(m.dropped_frames for m in sink.eos.values()),
        "frames_published": len(records),
        "frames_failed": sum(1 for r in records if r[3]),
        "sink_losses": sum(pipeline.sink_losses.values()),
        "streams_ended": len(sink.eos),
        "stage_p50_ms": {k: round(v["p50_ms"], 3) for k, v in snap.get("stages", {}).items()},
    }
    if not records:
        return row | {"error": "no frame reached the sink"}
    t0 = records[0][0] + warmup
    steady = [r for r in records if r[0] >= t0]
    if not steady:
        return row | {"error": f"no frame after the {warmup:.1f} s warm-up"}
    span = max(r[1] for r in steady) - t0
    latency = [r[1] - r[0] for r in steady]
    row.update({
        "steady_frames": len(steady), "steady_faces": sum(r[2] for r in steady),
        "steady_s": round(span, 3),
        "frames_per_s": len(steady) / span, "faces_per_s": sum(r[2] for r in steady) / span,
        "latency_p50_ms": percentile(latency, 50) * 1e3,
        "latency_p99_ms": percentile(latency, 99) * 1e3,
        "latency_max_ms": max(latency) * 1e3,
    })
    return row


def run(settings: Settings, part: Part) -> None:
    from norface_rt.pipeline.factory import open_backend

    model_dir = Path(settings.model_dir)
    t0 = time.perf_counter()
    inputs = load_inputs(settings.inputs, max_frames=settings.max_frames)
    part.update(inputs={"frames": inputs.frame_count, "faces": inputs.face_count,
                        "clips": [{"name": c.name, "frames": len(c), "faces": c.face_count,
                                   "fps": c.fps, "size": list(c.frames[0].shape[1::-1])}
                                  for c in inputs.clips]},
                load_inputs_s=round(time.perf_counter() - t0, 2))
    t0 = time.perf_counter()
    backend = open_backend(model_dir, "torch-cuda", device=settings.device,
                           threads=settings.threads, warm_up=True)
    warmup = min(1.0, settings.seconds / 4)
    try:
        part.update(backend=backend.describe(), load_s=round(time.perf_counter() - t0, 2),
                    warmup_s=warmup,
                    device_align_check=device_align_check(backend, inputs, model_dir))
        run_streams(backend, inputs, streams=1, paced=False, seconds=max(0.5, warmup),
                    warmup=0.0)  # first pipeline of the process: not measured
        for mode in MODES:
            for n in settings.streams:
                try:
                    row = run_streams(backend, inputs, streams=n, paced=mode == "paced",
                                      seconds=settings.seconds, warmup=warmup)
                except Exception as exc:  # one failed run is reported, the others still run
                    row = {"mode": mode, "streams": n, "error": f"{type(exc).__name__}: {exc}"}
                part.add_row(row)
    finally:
        backend.close()
    part.update(status="ok")
