"""The multithreaded stream processor: sources -> faces -> batched inference -> sinks.

Threads and queues (every queue bounded, each with its policy):

  source decode thread (one per source, owned by the Source)
      -> source queue: lossless blocking for files/images, drop-oldest + counter for live sources
  face thread (one per source; MediaPipe video mode tracks per stream, so one landmarker each)
      -> inference queue of :class:`FaceJob` (shared, bounded, blocking: back-pressure reaches
         file decoders, while live sources shed load at their own drop-oldest queue)
  inference thread (one; batches the faces of every stream into one backend call)
      -> publish queue of :class:`~norface_rt.types.FrameResult` (bounded, blocking)
  publish thread (one; assigns per-stream sequence numbers, hands every message to each sink's
  buffer, emits stats)
      -> one buffer and thread per sink (:class:`~norface_rt.sinks.worker.SinkWorker`): bounded;
         when full, a lossless run waits up to ``sink_timeout`` for room (then that sink is marked
         stalled and loses messages, counted, instead of stalling the rest), a live run drops at
         once (counted); end-of-stream messages always get in. A sink can only hold itself up.

Per-stream order is preserved end to end because each stream has one face thread feeding a FIFO
and the inference and publish threads are single. End of stream travels as an explicit item; so
does a stop (:class:`Halt`), which wakes a blocked consumer at once. Producers blocked on a full
queue sleep on its condition and are woken by the consumer or by ``stop()`` (no polling).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from norface_rt.backends.base import Backend
from norface_rt.sinks.base import BufferPolicy, ResultSink, Sink
from norface_rt.sinks.worker import SinkWorker
from norface_rt.smoothing import TrackSmoother
from norface_rt.sources.base import Source
from norface_rt.sources.frame_queue import FrameQueue
from norface_rt.stats import StageStats
from norface_rt.types import EndOfStream, FaceFrame, FaceResult, FrameResult, ModelOutput, Stage
from norface_rt.wire.messages import FrameMessage, Message, StatsMessage

if TYPE_CHECKING:
    from norface_rt.faces.stage import FaceStage

log = logging.getLogger(__name__)

# Longest a face thread waits on its source before re-checking for a stop it may have missed
# (a failed sibling thread halts the pipeline without stopping the sources).
_SOURCE_WAIT_S = 0.5


@dataclass(slots=True)
class FaceJob:
    """One frame on its way from a face thread to the inference batcher.

    ``error`` says why the face stage failed on this frame (it then has no faces); ``queued_at``
    (``perf_counter``) starts the frame's ``queue`` stage, the wait for its batch."""

    face_frame: FaceFrame
    error: str | None
    queued_at: float


@dataclass(slots=True)
class Halt:
    """Put into a stage's queue by ``stop()`` (or a failed thread): wake up and leave."""


InferItem = FaceJob | EndOfStream | Halt
PublishItem = FrameResult | EndOfStream | Halt


class StageError(RuntimeError):
    """A pipeline thread failed; the message names the thread and the cause."""


class Pipeline:
    """Runs any number of sources through one backend into any number of sinks.

    ``face_stage_factory(stream_id)`` builds the per-stream face stage (landmarker + tracker +
    aligner; :func:`norface_rt.pipeline.factory.build_face_stage`). Sinks receive the typed wire
    messages (see :class:`~norface_rt.sinks.base.Sink` for the image capability and the ``watch``
    hook, which every sink is offered here), or the frames' results
    (:class:`~norface_rt.sinks.base.ResultSink`).

    The keyword options are the run options of the same name
    (:class:`~norface_rt.pipeline.options.PipelineOptions`, which declares their defaults; they
    are required here so no second default can drift): ``landmarks`` / ``blendshapes`` add those
    optional face fields to frame messages; ``smooth`` (seconds; None or 0 = off) smooths each
    video stream's outputs per track (:mod:`norface_rt.smoothing`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        face_stage_factory: Callable[[str], FaceStage],
        backend: Backend,
        sinks: Iterable[Sink],
        *,
        max_batch: int,
        queue_size: int,
        stats_interval: float,
        device_align: bool,
        landmarks: bool,
        blendshapes: bool,
        smooth: float | None,
        sink_buffer: int,
        sink_timeout: float,
        stats: StageStats | None = None,
        on_result: Callable[[FrameMessage], None] | None = None,
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
        if not sink_timeout > 0:
            raise ValueError(f"sink_timeout must be > 0 seconds, got {sink_timeout}")
        if device_align and not backend.aligns_on_device:
            raise ValueError(f"device_align: backend {backend.name!r} cannot align on its device "
                             "(expected a backend with aligns_on_device, e.g. torch-cuda)")
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
        self._keep_images = any(s.needs_image for s in self.sinks)
        self._infer_q: FrameQueue[InferItem] = FrameQueue(queue_size, "lossless")
        self._publish_q: FrameQueue[PublishItem] = FrameQueue(queue_size, "lossless")
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self._face_stages: list[FaceStage] = []
        self._started = False
        self.landmarks = landmarks
        self.blendshapes = blendshapes
        # Stills are unrelated pictures: never smoothed across frames.
        self._smoothers = {s.stream_id: TrackSmoother(smooth) for s in self.sources
                           if smooth and not s.stills}
        for sink in self.sinks:
            sink.bind_model(backend.config)
        self.sink_timeout = float(sink_timeout)
        self._sink_deadline = float("inf")  # when stop() gives up on sinks (hurry() brings it in)
        self.workers = self._make_workers(sink_buffer)
        self.stats.attach(self.status)
        for sink in self.sinks:  # the metrics endpoint and the live view show these
            sink.watch(queue_depths=self.queue_depths, reconnects=self.reconnects,
                       status=self.status)

    def _make_workers(self, capacity: int) -> list[SinkWorker]:
        """One buffer + thread per sink. Lossless runs (every source a file or folder) wait a
        little for a slow sink (``sink_timeout``, or the sink's own ``write_timeout`` when that
        is longer: a NATS server restarting); runs with a live source never wait. A sink may ask
        otherwise (``buffer_policy``)."""
        lossless = not any(src.live for src in self.sources)
        workers = []
        seen: dict[str, int] = {}
        for sink in self.sinks:
            base = sink.name or type(sink).__name__
            n = seen[base] = seen.get(base, -1) + 1
            asked = (None if sink.buffer_policy is None
                     else BufferPolicy.parse(sink.buffer_policy, f"{base}.buffer_policy"))
            workers.append(SinkWorker(
                sink, base if n == 0 else f"{base}-{n}", capacity=max(capacity, sink.min_buffer),
                policy=asked or (BufferPolicy.BLOCK if lossless else BufferPolicy.DROP),
                # a sink that asks for blocking gets back-pressure without a stall limit
                stall_timeout=None if asked is BufferPolicy.BLOCK
                else max(self.sink_timeout, sink.write_timeout or 0.0)))
        return workers

    @property
    def sink_errors(self) -> int:
        """Sink writes (or closes) that raised."""
        return sum(w.failed for w in self.workers)

    @property
    def sink_losses(self) -> dict[str, int]:
        """Messages each sink has lost so far: dropped (buffer full, stalled) or failed."""
        return {w.name: w.losses for w in self.workers}

    @property
    def alive_threads(self) -> list[str]:
        """Stage threads still running after :meth:`stop` gave up waiting for them."""
        return [t.name for t in self._threads if t.is_alive()]

    @property
    def stuck_sinks(self) -> list[str]:
        """Sinks whose thread was still blocked when the pipeline stopped (abandoned)."""
        return [w.name for w in self.workers if w.abandoned]

    def status(self) -> dict[str, Any]:
        """What every stream and output is doing now: ``streams`` (each source's
        :meth:`~norface_rt.sources.base.Source.status`: state, skipped and lost frames, live
        reconnects, outage time, last error) and ``sinks`` (each output's counters: written,
        dropped, failed, queued, stalled). Merged into every stats message; the metrics endpoint
        reads it at each scrape."""
        streams = {}
        for src in self.sources:
            try:
                streams[src.stream_id] = src.status()
            except Exception:  # stats must never take a stream down
                log.exception("status of source %s failed", src.stream_id)
        return {"streams": streams, "sinks": {w.name: w.counters() for w in self.workers}}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._started:
            raise RuntimeError("pipeline already started")
        self._started = True
        for src in self.sources:
            self._face_stages.append(self._face_stage_factory(src.stream_id))
        for w in self.workers:
            w.start()
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
                self._halt()
                self._done.set()

        t = threading.Thread(target=guarded, name=f"norface-{name}", daemon=True)
        self._threads.append(t)
        t.start()

    def _halt(self) -> None:
        """Stop every stage thread now: set the flag, refuse further puts (waking blocked
        producers) and hand each consumer a Halt (waking it)."""
        self._stop.set()
        for q in (self._infer_q, self._publish_q):
            q.close()
            q.put_final(Halt())
        for w in self.workers:
            w.release()

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

    def stop(self, timeout: float = 5.0, *, sink_grace: float | None = None) -> None:
        """Stop sources, let their end-of-stream messages drain to the sinks, then join; never hangs.

        Sources stop first so nothing new arrives; each then ends with an EndOfStream that flows
        through the stages as usual, so subscribers of a live stream still get its ``eos``
        message. Whatever has not drained when ``timeout`` expires is abandoned. A stop before
        the end does not wait for room in any sink's buffer (what does not fit is dropped and
        counted; end-of-stream messages always get in).

        Then each sink writes what its buffer holds and is closed on its own thread: for at most
        ``sink_grace`` seconds, or, when None (a run that ended by itself), for as long as it
        keeps making progress (something written at least every ``sink_timeout`` seconds). A
        sink still stuck after that is abandoned (:attr:`stuck_sinks`), its buffer counted lost.
        """
        deadline = time.monotonic() + timeout
        if not self._done.is_set():
            for w in self.workers:
                w.release()
        for src in self.sources:
            try:
                src.stop(timeout=max(0.1, (deadline - time.monotonic()) / 2))
            except Exception:  # stopping one source must not prevent stopping the rest
                log.exception("stopping source %s failed", src.stream_id)
        if self._started and not self._stop.is_set():
            self._done.wait(max(0.0, deadline - time.monotonic()))
        self._halt()
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
        for w in self.workers:
            w.finish()
        if sink_grace is not None:
            self.hurry(sink_grace)
        for w in self.workers:
            w.join(lambda: self._sink_deadline,
                   stall_timeout=max(self.sink_timeout, (w.sink.write_timeout or 0.0) + 1.0))

    def hurry(self, grace: float) -> None:
        """Give sinks at most ``grace`` more seconds to finish (safe from a signal handler while
        :meth:`stop` waits for them)."""
        self._sink_deadline = min(self._sink_deadline, time.monotonic() + grace)
        for w in self.workers:
            w.release()

    def run(self, timeout: float | None = None) -> dict[str, Any]:
        """start + wait + stop; returns the final stats snapshot."""
        self.start()
        try:
            if not self.wait(timeout):
                raise TimeoutError(f"pipeline did not finish within {timeout} s")
        finally:
            self.stop()
        return self.stats.snapshot()

    def queue_depths(self) -> dict[str, int]:
        """Items waiting in each bounded queue now: every source's, the inference queue, the
        publish queue and every output's buffer (what a metrics endpoint shows; reading them
        takes each queue's lock)."""
        depths = {f"source:{s.stream_id}": s.queue_depth for s in self.sources}
        depths["infer"] = len(self._infer_q)
        depths["publish"] = len(self._publish_q)
        depths.update({f"sink:{w.name}": w.queued for w in self.workers})
        return depths

    def reconnects(self) -> dict[str, int]:
        """Reconnections so far of the parts that talk to servers: a remote backend, sinks (by
        their name) and live sources (``source:<stream id>``)."""
        counts: dict[str, int] = {}
        if self.backend.reconnects is not None:
            counts[self.backend.name] = self.backend.reconnects
        for sink in self.sinks:
            if sink.reconnects is not None:
                counts[sink.name or type(sink).__name__] = sink.reconnects
        for src in self.sources:
            if src.live and src.reconnects is not None:
                counts[f"source:{src.stream_id}"] = src.reconnects
        return counts

    @property
    def pumps(self) -> bool:
        """True when a sink has work for the main thread (:meth:`pump`): a window."""
        return any(s.main_thread for s in self.sinks)

    def pump(self, timeout: float) -> None:
        """On the process's main thread: let the sinks that need it (``main_thread``: a GUI
        window) do their share, waiting at most ``timeout`` seconds; without such a sink, just
        wait for the end that long. Call it in the wait loop, and once more after :meth:`stop`
        so that windows are destroyed by the thread that made them."""
        mains = [s for s in self.sinks if s.main_thread]
        if not mains:
            self._done.wait(timeout)
            return
        for sink in mains:
            try:
                sink.pump(timeout / len(mains))
            except Exception:  # a broken window must not end the run's bookkeeping
                log.exception("output %s failed on the main thread", sink.name)

    @property
    def quit_requested(self) -> bool:
        """True when a sink asked to end the run (q / Esc in a ``--show`` window)."""
        return any(s.quit_requested for s in self.sinks)

    # ------------------------------------------------------------------ threads
    def _face_loop(self, src: Source, stage: FaceStage) -> None:
        warned_cut = False
        while not self._stop.is_set():
            item = src.read(timeout=_SOURCE_WAIT_S)
            if item is None:
                continue
            if isinstance(item, EndOfStream):
                self._infer_q.put(item)
                return
            err = item.error  # a frame the source could not decode travels flagged
            if err is not None:
                ff = FaceFrame.failed(item)
            else:
                try:
                    ff = stage.process(item)
                except Exception as exc:  # one bad frame is flagged, not fatal for the stream
                    log.exception("face stage failed on %s frame %d", item.stream_id,
                                  item.frame_index)
                    ff = FaceFrame.failed(item)
                    err = f"face stage failed: {type(exc).__name__}: {exc}"
            if ff.faces_cut and not warned_cut:
                warned_cut = True  # once per stream; every message carries its own count
                log.warning("stream %s frame %d: %d more face(s) than --max-faces %d were found "
                            "and left out (the smallest); raise max_faces (--max-faces) to keep "
                            "them",
                            item.stream_id, item.frame_index, ff.faces_cut, len(ff.faces))
            if not self._infer_q.put(FaceJob(ff, err, time.perf_counter())):
                return

    def _infer_loop(self) -> None:
        cfg = self.backend.config
        open_streams = {s.stream_id for s in self.sources}
        while open_streams:
            first = self._infer_q.get(None)
            if first is None or isinstance(first, Halt):
                return
            items: list[FaceJob | EndOfStream] = [first]
            n_faces = len(first.face_frame.faces) if isinstance(first, FaceJob) else 0
            # Greedy batching: take whatever is already waiting, up to max_batch faces.
            while n_faces < self.max_batch:
                nxt = self._infer_q.get(0.0)
                if nxt is None:
                    break
                if isinstance(nxt, Halt):
                    return
                items.append(nxt)
                if isinstance(nxt, FaceJob):
                    n_faces += len(nxt.face_frame.faces)
            with_faces = [it.face_frame for it in items
                          if isinstance(it, FaceJob) and it.face_frame.faces]
            t0 = time.perf_counter()
            out, infer_err = self._infer(with_faces, n_faces)
            infer_s = time.perf_counter() - t0
            offset = 0
            for it in items:
                if isinstance(it, EndOfStream):
                    open_streams.discard(it.stream_id)
                    if not self._publish_q.put(it):
                        return
                    continue
                ff = it.face_frame
                fr = ff.frame
                fr.timings[Stage.QUEUE] = max(0.0, t0 - it.queued_at)
                faces: list[FaceResult] = []
                if ff.faces:
                    # Each frame waited for its whole batch, so the batch's stage times are its own
                    # latency contribution: normalize + classify (split graphs) or infer.
                    fr.timings.update(out.timings if out is not None and out.timings
                                      else {Stage.INFER: infer_s})
                    if out is not None:
                        faces = [FaceResult.from_output(face, out, offset + i, cfg)
                                 for i, face in enumerate(ff.faces)]
                    offset += len(ff.faces)
                smoother = self._smoothers.get(fr.stream_id)
                if smoother is not None:
                    smoother.apply(faces, fr.pts)
                result = FrameResult.from_face_frame(
                    ff, faces, cfg, error=it.error or (infer_err if ff.faces else None),
                    keep_image=self._keep_images)
                if not self._publish_q.put(result):
                    return

    def _infer(self, with_faces: list[FaceFrame], n_faces: int
               ) -> tuple[ModelOutput | None, str | None]:
        """One backend call for the batch; a failure flags the affected frames, keeps streams."""
        if not with_faces:
            return None, None
        try:
            geometry = self._geometry(with_faces)
            if self.device_align:
                return self.backend.infer_aligned_many(
                    [(ff.frame.image, self._matrices(ff)) for ff in with_faces],
                    geometry=geometry), None
            return self.backend.infer(np.concatenate([ff.crops for ff in with_faces], axis=0),
                                      geometry=geometry), None
        except Exception as exc:
            log.exception("inference failed on a batch of %d faces", n_faces)
            return None, f"inference failed: {type(exc).__name__}: {exc}"

    def _geometry(self, with_faces: list[FaceFrame]) -> np.ndarray | None:
        if not self.backend.config.geometry_dim:
            return None
        parts = [ff.geometry for ff in with_faces]
        if any(p is None for p in parts):
            raise ValueError("face frame without geometry for a model that consumes it (the face "
                             "stage must be built for the backend's config)")
        return np.concatenate(parts, axis=0)  # type: ignore[arg-type]  # None excluded above

    @staticmethod
    def _matrices(ff: FaceFrame) -> np.ndarray:
        if ff.matrices is None:
            raise ValueError("face frame without image->crop matrices (the face stage must keep "
                             "them when the backend aligns on its device)")
        return ff.matrices

    def _publish_loop(self) -> None:
        open_streams = {s.stream_id for s in self.sources}
        seqs: dict[str, int] = {}
        next_stats = time.monotonic() + self.stats_interval
        while open_streams:
            wait = max(0.0, next_stats - time.monotonic()) if self.stats_interval else None
            item = self._publish_q.get(wait)
            if isinstance(item, Halt):
                return
            if isinstance(item, EndOfStream):
                seq = seqs.get(item.stream_id, 0)
                seqs[item.stream_id] = seq + 1
                # frames = frame messages published (a stop discards frames still queued)
                item.frames = seq
                self._emit(item.to_wire(seq, sink_losses=self.sink_losses), None, final=True)
                self.stats.stream_ended(item.stream_id, item.dropped, item.error)
                open_streams.discard(item.stream_id)
            elif isinstance(item, FrameResult):
                self._publish_frame(item, seqs)
            if self.stats_interval and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.stats_interval
                self._emit(StatsMessage.from_snapshot(self.stats.snapshot()), None)
        if self.stats_interval:
            self._emit(StatsMessage.from_snapshot(self.stats.snapshot()), None)
        self._done.set()

    def _publish_frame(self, item: FrameResult, seqs: dict[str, int]) -> None:
        seq = seqs.get(item.stream_id, 0)
        seqs[item.stream_id] = seq + 1
        item.seq = seq
        t0 = time.perf_counter()
        item.emit_time = time.time()
        msg = item.to_wire(landmarks=self.landmarks, blendshapes=self.blendshapes)
        self._emit(msg, item.image, item)
        self.stats.add_many(item.timings)
        self.stats.add(Stage.PUBLISH, time.perf_counter() - t0)
        self.stats.add(Stage.LATENCY, item.emit_time - item.capture_time)
        self.stats.frame_done(item.stream_id, len(item.faces), item.dropped)
        if self.on_result is not None:
            self.on_result(msg)

    def _emit(self, msg: Message, image: np.ndarray | None,
              result: FrameResult | None = None, *, final: bool = False) -> None:
        """Hand ``msg`` to every sink's buffer (never blocks beyond a sink's stall timeout, except
        for a sink that asked for back-pressure). A :class:`ResultSink` gets every message, with
        the frame's typed ``result``; a sink with ``needs_image`` gets the frames that have
        pixels, and the other messages too when it declares ``every_message``."""
        for w in self.workers:
            if isinstance(w.sink, ResultSink):
                w.offer(msg, image if w.sink.needs_image else None, result=result, final=final)
            elif not w.sink.needs_image:
                w.offer(msg, final=final)
            elif isinstance(msg, FrameMessage) and image is not None:
                w.offer(msg, image)
            elif w.sink.every_message:
                w.offer(msg, final=final)
