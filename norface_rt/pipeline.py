"""The multithreaded stream processor: sources -> faces -> batched inference -> sinks.

Threads and queues (every queue bounded, each with its policy):

  source decode thread (one per source, owned by the Source)
      -> source queue: lossless blocking for files/images, drop-oldest + counter for live sources
  face thread (one per source; MediaPipe video mode tracks per stream, so one landmarker each)
      -> inference queue (shared, bounded, blocking: back-pressure reaches file decoders, while live
         sources shed load at their own drop-oldest queue)
  inference thread (one; batches the faces of every stream into one backend call)
      -> publish queue (bounded, blocking)
  publish thread (one; assigns per-stream sequence numbers, writes every sink, emits stats)

Per-stream order is preserved end to end because each stream has one face thread feeding a FIFO
and the inference and publish threads are single. End of stream travels as an explicit item.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from norface_rt.stats import StageStats
from norface_rt.types import EndOfStream, FaceFrame, FaceResult, FramePacket, FrameResult

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds; how often blocked threads re-check the stop event


class SourceLike(Protocol):
    stream_id: str
    live: bool

    def start(self) -> None: ...
    def read(self, timeout: float) -> FramePacket | EndOfStream | None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


class FaceStageLike(Protocol):
    def process(self, frame: FramePacket) -> FaceFrame: ...
    def close(self) -> None: ...


class BackendLike(Protocol):
    config: Any

    def infer(self, crops: np.ndarray, *, want_normalized: bool = False) -> Any: ...


class SinkLike(Protocol):
    def write(self, msg: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Stopped:
    """Marker a thread puts when it gives up because stop() was called."""


class StageError(RuntimeError):
    """A pipeline thread failed; the message names the thread and the cause."""


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    """Blocking put that still honours stop(): returns False if stopped before the put succeeded."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def build_face_results(face_frame: FaceFrame, out: Any, offset: int, cfg: Any) -> list[FaceResult]:
    """Turn rows ``offset..offset+n`` of a backend output into per-face results."""
    results: list[FaceResult] = []
    au_names, emo_names = list(cfg.au_names), list(cfg.emotion_names)
    for i, face in enumerate(face_frame.faces):
        r = offset + i
        emo = out.emotion_prob[r]
        results.append(FaceResult(
            track_id=face.track_id, box=face.box, confidence=face.confidence, pose=face.pose,
            au_occurrence=dict(zip(au_names, map(float, out.au_prob[r]))),
            au_intensity=dict(zip(au_names, map(float, out.au_intensity[r]))),
            emotions=dict(zip(emo_names, map(float, emo))),
            top_emotion=emo_names[int(np.argmax(emo))],
            model_id=str(cfg.model_id),
        ))
    return results


class Pipeline:
    """Runs any number of sources through one backend into any number of sinks.

    ``face_stage_factory(stream_id)`` builds the per-stream face stage (landmarker + tracker +
    aligner). Sinks receive protocol message dicts; a sink with ``needs_image = True`` is called as
    ``write(msg, image)`` with the frame's RGB pixels (overlay video, on-screen display).
    """

    def __init__(
        self,
        sources: Sequence[SourceLike],
        face_stage_factory: Callable[[str], FaceStageLike],
        backend: BackendLike,
        sinks: Iterable[SinkLike],
        *,
        max_batch: int = 16,
        queue_size: int = 8,
        stats_interval: float = 0.0,
        stats: StageStats | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        device_align: bool = False,
    ) -> None:
        if not sources:
            raise ValueError("sources: expected at least one source, got 0")
        ids = [s.stream_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if stats_interval < 0:
            raise ValueError(f"stats_interval must be >= 0 seconds, got {stats_interval}")
        if device_align and not callable(getattr(backend, "infer_aligned_many", None)):
            raise ValueError(f"device_align: backend {getattr(backend, 'name', type(backend).__name__)!r} "
                             "cannot align on its device (expected a backend with infer_aligned_many, "
                             "e.g. torch-cuda)")
        self.sources = list(sources)
        self.backend = backend
        # Faces travel as (frame, matrices) and are warped by the backend on its device.
        self.device_align = device_align
        self.sinks = list(sinks)
        self.max_batch = max_batch
        self.stats_interval = stats_interval
        self.stats = stats or StageStats()
        self.on_result = on_result
        self._face_stage_factory = face_stage_factory
        self._keep_images = any(getattr(s, "needs_image", False) for s in self.sinks)
        self._infer_q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._publish_q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self._face_stages: list[FaceStageLike] = []
        self._started = False
        self.sink_errors = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._started:
            raise RuntimeError("pipeline already started")
        self._started = True
        for src in self.sources:
            self._face_stages.append(self._face_stage_factory(src.stream_id))
        self._spawn(self._publish_loop, "publish")
        self._spawn(self._infer_loop, "infer")
        for src in self.sources:
            src.start()
        for src, stage in zip(self.sources, self._face_stages):
            self._spawn(self._face_loop, f"faces-{src.stream_id}", src, stage)

    def _spawn(self, fn: Callable[..., None], name: str, *args: Any) -> None:
        def guarded() -> None:
            try:
                fn(*args)
            except Exception as exc:  # a thread must never die silently
                log.exception("pipeline thread %s failed", name)
                with self._errors_lock:
                    self._errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self._stop.set()
                self._done.set()

        t = threading.Thread(target=guarded, name=f"norface-{name}", daemon=True)
        self._threads.append(t)
        t.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream has ended and been published; True if it finished."""
        finished = self._done.wait(timeout)
        self.raise_if_failed()
        return finished

    def raise_if_failed(self) -> None:
        with self._errors_lock:
            if self._errors:
                raise StageError("; ".join(self._errors))

    @property
    def errors(self) -> list[str]:
        with self._errors_lock:
            return list(self._errors)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sources, let their end-of-stream messages drain to the sinks, then join; never hangs.

        Sources stop first so nothing new arrives; each then ends with an EndOfStream that flows
        through the stages as usual, so subscribers of a live stream still get its ``eos``
        message. Whatever has not drained when ``timeout`` expires is abandoned.
        """
        deadline = time.monotonic() + timeout
        for src in self.sources:
            try:
                src.stop(timeout=max(0.1, (deadline - time.monotonic()) / 2))
            except Exception:  # stopping one source must not prevent stopping the rest
                log.exception("stopping source %s failed", src.stream_id)
        if self._started and not self._stop.is_set():
            self._done.wait(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("threads still running after stop(%.1f s): %s", timeout, alive)
        for stage in self._face_stages:
            try:
                stage.close()
            except Exception:
                log.exception("closing face stage failed")
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %r failed", sink)

    def run(self, timeout: float | None = None) -> dict[str, Any]:
        """start + wait + stop; returns the final stats snapshot."""
        self.start()
        try:
            if not self.wait(timeout):
                raise TimeoutError(f"pipeline did not finish within {timeout} s")
        finally:
            self.stop()
        return self.stats.snapshot()

    # ------------------------------------------------------------------ threads
    def _face_loop(self, src: SourceLike, stage: FaceStageLike) -> None:
        while not self._stop.is_set():
            item = src.read(timeout=_POLL)
            if item is None:
                continue
            if isinstance(item, EndOfStream):
                _put(self._infer_q, item, self._stop)
                return
            try:
                ff = stage.process(item)
                err = None
            except Exception as exc:  # one bad frame is flagged, not fatal for the stream
                log.exception("face stage failed on %s frame %d", item.stream_id, item.frame_index)
                ff = FaceFrame(frame=item, faces=[], crops=np.zeros((0, 1, 1, 3), np.uint8))
                err = f"face stage failed: {type(exc).__name__}: {exc}"
            ff.frame.timings["_queued_at"] = time.perf_counter()
            if not _put(self._infer_q, (ff, err), self._stop):
                return

    def _infer_loop(self) -> None:
        cfg = self.backend.config
        open_streams = {s.stream_id for s in self.sources}
        while open_streams and not self._stop.is_set():
            try:
                first = self._infer_q.get(timeout=_POLL)
            except queue.Empty:
                continue
            items = [first]
            n_faces = 0 if isinstance(first, EndOfStream) else len(first[0].faces)
            # Greedy batching: take whatever is already waiting, up to max_batch faces.
            while n_faces < self.max_batch:
                try:
                    nxt = self._infer_q.get_nowait()
                except queue.Empty:
                    break
                items.append(nxt)
                if not isinstance(nxt, EndOfStream):
                    n_faces += len(nxt[0].faces)
            frames = [it for it in items if not isinstance(it, EndOfStream)]
            with_faces = [ff for ff, _ in frames if len(ff.faces)]
            t0 = time.perf_counter()
            out, infer_err = None, None
            if with_faces:
                try:
                    if self.device_align:
                        out = self.backend.infer_aligned_many(  # type: ignore[attr-defined]
                            [(ff.frame.image, ff.matrices) for ff in with_faces])
                    else:
                        out = self.backend.infer(np.concatenate([ff.crops for ff in with_faces], axis=0))
                except Exception as exc:  # flag the affected frames, keep the streams alive
                    log.exception("inference failed on a batch of %d faces", n_faces)
                    infer_err = f"inference failed: {type(exc).__name__}: {exc}"
            infer_s = time.perf_counter() - t0
            offset = 0
            for it in items:
                if isinstance(it, EndOfStream):
                    open_streams.discard(it.stream_id)
                    if not _put(self._publish_q, it, self._stop):
                        return
                    continue
                ff, err = it
                fr = ff.frame
                fr.timings["queue"] = t0 - fr.timings.pop("_queued_at", t0)
                faces: list[FaceResult] = []
                if ff.faces:
                    # Each frame waited for its whole batch, so the batch's stage times are its own
                    # latency contribution: normalize + classify (split graphs) or infer.
                    stage_times = getattr(out, "timings", None) or {"infer": infer_s}
                    fr.timings.update(stage_times)
                    if out is not None:
                        faces = build_face_results(ff, out, offset, cfg)
                    offset += len(ff.faces)
                result = FrameResult(
                    stream_id=fr.stream_id, seq=-1, frame_index=fr.frame_index, pts=fr.pts,
                    capture_time=fr.capture_time, width=fr.width, height=fr.height,
                    dropped=fr.dropped, faces=faces, untrained=not bool(cfg.trained),
                    timings=dict(fr.timings), error=err or (infer_err if ff.faces else None),
                    image=fr.image if self._keep_images else None,
                )
                if not _put(self._publish_q, result, self._stop):
                    return

    def _publish_loop(self) -> None:
        from norface_rt import protocol

        open_streams = {s.stream_id for s in self.sources}
        seqs: dict[str, int] = {}
        last_stats = time.monotonic()
        while open_streams and not self._stop.is_set():
            try:
                item = self._publish_q.get(timeout=_POLL)
            except queue.Empty:
                item = None
            if isinstance(item, EndOfStream):
                seq = seqs.get(item.stream_id, 0)
                seqs[item.stream_id] = seq + 1
                self._emit(protocol.eos_message(item, seq), None)
                self.stats.stream_ended(item.stream_id, item.dropped, item.error)
                open_streams.discard(item.stream_id)
            elif isinstance(item, FrameResult):
                seq = seqs.get(item.stream_id, 0)
                seqs[item.stream_id] = seq + 1
                item.seq = seq
                t0 = time.perf_counter()
                item.emit_time = time.time()
                msg = item.to_message()
                self._emit(msg, item.image)
                self.stats.add_many({k: v for k, v in item.timings.items() if not k.startswith("_")})
                self.stats.add("publish", time.perf_counter() - t0)
                self.stats.add("latency", item.emit_time - item.capture_time)
                self.stats.frame_done(item.stream_id, len(item.faces), item.dropped)
                if self.on_result is not None:
                    self.on_result(msg)
            if self.stats_interval and time.monotonic() - last_stats >= self.stats_interval:
                last_stats = time.monotonic()
                self._emit(protocol.stats_message(self.stats.snapshot()), None)
        if not open_streams:
            if self.stats_interval:
                self._emit(protocol.stats_message(self.stats.snapshot()), None)
            self._done.set()

    def _emit(self, msg: dict[str, Any], image: np.ndarray | None) -> None:
        for sink in self.sinks:
            try:
                if getattr(sink, "needs_image", False):
                    if msg.get("type") == "frame" and image is not None:
                        sink.write(msg, image)  # type: ignore[call-arg]
                else:
                    sink.write(msg)
            except Exception:  # a broken sink is reported, the others keep receiving
                self.sink_errors += 1
                log.exception("sink %s failed on a %s message", type(sink).__name__, msg.get("type"))
