"""The Python API: analyse pictures and videos from a notebook or a service.

    import norface_rt
    with norface_rt.Analyzer() as analyzer:             # the CLI's options: model_dir, max_faces, ...
        faces = analyzer.analyze_image("photo.jpg")     # or an HxWx3 uint8 RGB array
        for frame in analyzer.analyze_images(paths):    # many photos through one warm pipeline
            ...
        for frame in analyzer.analyze_video("clip.mp4", progress=True):  # any source the CLI takes
            ...
    df = norface_rt.to_dataframe(frames)                # pandas (the 'pandas' extra); any result

Nothing here analyses anything by itself: every call runs the CLI's pipeline, built by the one
factory (:func:`norface_rt.pipeline.create_pipeline`) with the same sources, face stages, threads
and result types, and reads its typed results from a bounded queue
(:class:`~norface_rt.sinks.results.ResultQueue`). Memory therefore stays bounded for any length
of video, and leaving a loop early stops the pipeline's threads. The model is loaded once per
:class:`Analyzer`; pictures (``analyze_image``, ``analyze_images``) go through one still-image
pipeline that the analyzer keeps running between calls (:class:`~norface_rt.sources.feed.FeedSource`),
so a photo costs its analysis, not a pipeline's start-up. MediaPipe's native log
lines are kept off stderr while the analyzer works (``native_logs=True`` keeps them), and
``close()`` (or the end of a ``with`` block) stops everything it started.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from norface_rt.backends.base import Backend
from norface_rt.config import ModelConfig
from norface_rt.flags import default_for, default_of, options_of
from norface_rt.native_logs import shared_filter
from norface_rt.pipeline import (
    Pipeline,
    PipelineOptions,
    SinkOptions,
    create_pipeline,
    make_sinks,
    open_backend,
)
from norface_rt.pipeline.factory import check_landmarker_feeds
from norface_rt.sinks.base import Sink
from norface_rt.sinks.files import CSV_STYLES, CsvLayout
from norface_rt.sinks.results import ImageResultQueue, ResultQueue
from norface_rt.types import FaceResult, FrameResult

if TYPE_CHECKING:
    import pandas as pd

    from norface_rt.sources.feed import FeedSource

log = logging.getLogger(__name__)

Source = str | os.PathLike[str]
Picture = str | os.PathLike[str] | np.ndarray
_POLL_S = 0.2  # how often a waiting iteration checks for a failed pipeline thread
_IN_FLIGHT = 8  # pictures analyze_images keeps in the still pipeline at once


class Faces(list[FaceResult]):
    """The faces of one picture (``analyze_image``): a list of :class:`FaceResult`, with the
    picture's whole :class:`FrameResult` in ``frame`` (its size, its file) and, when the
    picture held more faces than ``max_faces`` allowed, how many were left out in
    ``faces_cut``."""

    def __init__(self, frame: FrameResult) -> None:
        super().__init__(frame.faces)
        self.frame = frame

    @property
    def faces_cut(self) -> int:
        return self.frame.faces_cut


class StreamWarning(RuntimeWarning):
    """A stream ended with an error after delivering what it could (see ``VideoAnalysis.error``)."""


class VideoAnalysis:
    """The frames of one source, as :class:`~norface_rt.types.FrameResult` objects in order.

    Iterate it once (``for frame in analysis``); the pipeline starts with the iteration and stops
    when the source ends, when the loop is left early, or on :meth:`close` (also the end of a
    ``with`` block). After the end, :attr:`error` says why the stream ended early (None for a
    clean end; a :class:`StreamWarning` is issued too) and :attr:`frames` how many frames came.
    """

    def __init__(self, pipeline: Pipeline, sink: ResultQueue, stop_timeout: float, *,
                 progress: bool = False, quiet: bool = True, live_url: str | None = None) -> None:
        self.pipeline = pipeline
        # The live view's address when the analysis serves one (Analyzer(http=...)).
        self.live_url = live_url
        self._sink = sink
        self._stop_timeout = stop_timeout
        self._progress = progress
        self._quiet = quiet
        self._used = False
        self._closed = False
        self.frames = 0
        self.error: str | None = None
        self.ended = False

    @property
    def stream_id(self) -> str:
        return self.pipeline.sources[0].stream_id

    @property
    def expected_frames(self) -> int | None:
        """How many frames the source says it holds (None: unknown, e.g. a live stream)."""
        return self.pipeline.sources[0].expected_frames

    def __iter__(self) -> Iterator[FrameResult]:
        if self._used:
            raise RuntimeError("this analysis was already iterated; call analyze_video again")
        self._used = True
        return self._frames()

    def _frames(self) -> Iterator[FrameResult]:
        bar = None
        with shared_filter(self._quiet):
            try:
                if self._progress:
                    from tqdm import tqdm

                    bar = tqdm(total=self.expected_frames, unit="frame", dynamic_ncols=True)
                self.pipeline.start()
                yield from self._results(bar)
            finally:
                if bar is not None:
                    bar.close()
                self.close()

    def _results(self, bar: Any) -> Iterator[FrameResult]:
        while True:
            item = self._sink.get(_POLL_S)
            if item is None:
                self.pipeline.raise_if_failed()
                continue
            if isinstance(item, FrameResult):
                self.frames += 1
                if bar is not None:
                    bar.update(1)
                yield item
                continue
            self.ended = True  # the stream's eos message
            self.error = item.error
            if self.error:
                warnings.warn(f"stream {item.stream_id!r} ended with an error after "
                              f"{self.frames} frame(s): {self.error}", StreamWarning,
                              stacklevel=3)
            return

    def close(self) -> None:
        """Stop the pipeline (if running) and release the source; harmless to call twice."""
        if self._closed:
            return
        self._closed = True
        self._sink.cancel()
        with shared_filter(self._quiet):
            self.pipeline.stop(timeout=self._stop_timeout)

    def __enter__(self) -> VideoAnalysis:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # an analysis never iterated still holds an opened source
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # nothing may escape a finaliser
                log.exception("closing an abandoned analysis failed")


class _Stills:
    """The analyzer's still-image pipeline, kept running between picture calls: one
    :class:`FeedSource` stream in, one result out per picture, in order."""

    def __init__(self, pipeline: Pipeline, feed: FeedSource, sink: ResultQueue) -> None:
        self.pipeline, self.feed, self.sink = pipeline, feed, sink
        self.outstanding = 0  # pictures put in whose result has not been taken
        pipeline.start()

    def put(self, picture: Picture) -> None:
        while not self.feed.put(picture, timeout=_POLL_S):
            self.pipeline.raise_if_failed()
            if self.feed.end is not None or not self.pipeline.alive_threads:
                raise RuntimeError("the still-image pipeline has stopped")
        self.outstanding += 1

    def take(self) -> FrameResult:
        while True:
            item = self.sink.get(_POLL_S)
            if isinstance(item, FrameResult):
                self.outstanding -= 1
                return item
            if item is None:
                self.pipeline.raise_if_failed()
                continue
            raise RuntimeError(f"the still-image pipeline ended: {item.error or 'stopped'}")

    def drain(self) -> None:
        """Take (and drop) the results of pictures whose caller left, so the next call's result
        is its own."""
        while self.outstanding:
            self.take()

    def close(self, timeout: float) -> None:
        self.feed.finish()
        self.sink.cancel()
        self.pipeline.stop(timeout=timeout)


class Analyzer:
    """Analyses pictures and videos with one model, loaded once (not thread-safe: one call at a
    time per Analyzer; several Analyzers may run side by side).

    Its options are the ``norface-rt run`` options of the same name, forwarded to the same
    :class:`~norface_rt.pipeline.options.PipelineOptions` (so they share every default and every
    check): ``model_dir`` and ``landmarker`` are looked up as the CLI does when None (the
    landmarker bundled with the package last); ``backend`` (onnxruntime, torch, torch-cuda,
    tensorrt) and ``device``/``threads`` choose how the model runs; ``max_faces`` (None: 4 in
    videos, no cap in pictures), ``tiling``, ``baseline`` and ``smooth`` (seconds; None = off)
    shape the face stage and the outputs; ``max_batch`` and ``queue_size`` the pipeline
    (:meth:`PipelineOptions.api_options` lists them). Besides: ``progress`` shows a progress bar
    for ``analyze_images`` and ``analyze_video`` (each call may say otherwise), and
    ``native_logs`` keeps MediaPipe's native log lines on stderr (off: filtered while the
    analyzer works).

    ``http`` (``[HOST:]PORT``, loopback unless ``allow_remote``; port 0 picks a free one) serves
    the live view of every video analysis while it runs, as ``run --http`` does: open
    :attr:`VideoAnalysis.live_url` in a browser beside the notebook (with a fixed port, every
    analysis has the same address). ``http_token`` (every request must carry it) and
    ``http_fps`` are the CLI's too (:meth:`SinkOptions.api_options`). The view never slows the
    analysis: a viewer that falls behind misses images, counted. One analysis serves a port at
    a time (close or finish one before the next on the same port); ``analyze_image`` and
    ``analyze_images`` serve none.

    Missing model files raise at once (FileNotFoundError naming where they were looked for);
    absurd values raise ValueError naming the option, and an option the API does not take
    raises TypeError. ``close()`` (or leaving a ``with`` block) stops the analyzer's pipelines,
    open analyses included, and releases the model.
    """

    def __init__(self, model_dir: Source | None = None, landmarker: Source | None = None, *,
                 progress: bool = False, native_logs: bool = False, **options: Any) -> None:
        from norface_rt.paths import resolve_landmarker, resolve_model_dir

        run_taken, view_taken = PipelineOptions.api_options(), SinkOptions.api_options()
        unknown = sorted(set(options) - set(run_taken) - set(view_taken))
        if unknown:
            raise TypeError(f"Analyzer() got unexpected option(s) {unknown}; it takes "
                            f"{[*run_taken, *view_taken]} and progress, native_logs")
        self.progress = bool(progress)
        self._quiet = not native_logs
        self._stills: _Stills | None = None
        self._analyses: weakref.WeakSet[VideoAnalysis] = weakref.WeakSet()
        self._backend: Backend | None = None
        self._options: dict[str, Any] = {"model_dir": model_dir, "landmarker": landmarker,
                                         **{k: v for k, v in options.items() if k in run_taken}}
        # The live view of every video analysis; its only output besides the caller's loop.
        self._view = SinkOptions(zmq="none", **{k: v for k, v in options.items()
                                                if k in view_taken})
        self._view.validate()
        run = PipelineOptions(sources=["<check>"], **self._options)
        run.validate()
        resolved_model = resolve_model_dir(model_dir)
        self._options["landmarker"] = resolve_landmarker(landmarker)
        self._backend_name = run.backend
        self._backend = open_backend(resolved_model, run.backend, device=run.device,
                                     threads=run.threads, warm_up=True)
        try:
            check_landmarker_feeds(self._options["landmarker"], self._backend.config)
        except BaseException:
            self.close()
            raise

    @property
    def config(self) -> ModelConfig:
        """The model's configuration (label names, input size, whether it is trained)."""
        return self._require_backend().config

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("this Analyzer is closed")
        return self._backend

    def analyze_video(self, source: Source, *, stream_id: str | None = None,
                      realtime: bool = False, loop: bool = False, keep_images: bool = False,
                      buffer: int = 16, stop_timeout: float = 5.0,
                      progress: bool | None = None, http: str | None = None,
                      http_token: str | None = None) -> VideoAnalysis:
        """The frames of ``source`` (a video file, image file or folder, ``rtsp://`` URL,
        ``/dev/videoN`` or ``webcam:N``), one :class:`FrameResult` each, in order.

        The source is opened (and checked) now; analysis runs while the result is iterated, at
        most ``buffer`` results ahead of the caller. ``keep_images`` keeps each frame's RGB
        pixels in ``FrameResult.image`` (for drawing; costs a frame of memory per result
        buffered). ``realtime``/``loop`` are the CLI's file options; ``progress`` shows a bar
        (frames done of the source's length when it knows it; default: the analyzer's).

        ``http`` / ``http_token``, when given, replace the Analyzer's for this analysis (see
        :class:`Analyzer`): the live view at :attr:`VideoAnalysis.live_url`.
        """
        if isinstance(source, np.ndarray):
            raise ValueError("source: got an array; use analyze_image for pixels in memory")
        view = self._view
        if http is not None or http_token is not None:
            view = dataclasses.replace(view, http=http if http is not None else view.http,
                                       http_token=http_token if http_token is not None
                                       else view.http_token)
            view.validate()
        analysis = self._analysis([os.fspath(source)], stream_id, realtime=realtime, loop=loop,
                                  keep_images=keep_images, buffer=buffer,
                                  stop_timeout=stop_timeout,
                                  progress=self.progress if progress is None else progress,
                                  view=view)
        self._analyses.add(analysis)
        return analysis

    def analyze_image(self, image: Picture) -> Faces:
        """The faces of one picture: an image file, or an HxWx3 uint8 RGB array (as read by
        ``PIL.Image.open(p).convert("RGB")`` through ``np.asarray``, or OpenCV's BGR flipped
        with ``img[..., ::-1]``), as :class:`Faces` (a list of :class:`FaceResult` that also
        holds the picture's :class:`FrameResult` and its ``faces_cut``). An unreadable file or a
        malformed array raises ValueError saying what was wrong (dtype, shape or channel
        count). Pictures go through the analyzer's still pipeline, started by the first call and
        kept running, so later calls cost only the analysis."""
        picture = self._picture(image, "image")
        with shared_filter(self._quiet):
            stills = self._stills_pipeline()
            stills.drain()
            stills.put(picture)
            frame = stills.take()
        frame.frame_index = frame.seq = 0  # this call's one picture (the stream runs on)
        if frame.error:
            raise ValueError(f"image: {frame.error}")
        if frame.faces_cut:
            warnings.warn(f"image: {frame.faces_cut} more face(s) than max_faces "
                          f"{len(frame.faces)} were found and left out (the smallest; "
                          "faces_cut counts them)", UserWarning, stacklevel=2)
        return Faces(frame)

    def analyze_images(self, images: Iterable[Picture], *,
                       progress: bool | None = None) -> Iterator[FrameResult]:
        """One :class:`FrameResult` per picture (an image file or an RGB array), in order
        (``frame_index`` is its place in ``images``), each naming its file (``source``); a file
        that cannot be read is a result with ``error`` set
        and no faces, never an exception, so a batch is never lost to one bad file. Missing
        files and malformed arrays raise before anything is analysed. Pictures stream through
        the analyzer's still pipeline, a few at a time (memory stays bounded however many);
        ``progress`` shows a bar (default: the analyzer's)."""
        items = images if isinstance(images, Sequence) else list(images)
        pictures = [self._picture(im, f"images[{i}]") for i, im in enumerate(items)]
        return self._stream(pictures, self.progress if progress is None else progress)

    def _stream(self, pictures: list[Picture], progress: bool) -> Iterator[FrameResult]:
        bar = None
        with shared_filter(self._quiet):
            stills = self._stills_pipeline()
            stills.drain()
            try:
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=len(pictures), unit="image", dynamic_ncols=True)
                queued = 0
                for i in range(len(pictures)):
                    while queued < len(pictures) and stills.outstanding < _IN_FLIGHT:
                        stills.put(pictures[queued])
                        queued += 1
                    frame = stills.take()
                    frame.frame_index = frame.seq = i  # its place in this call's list
                    if bar is not None:
                        bar.update(1)
                    yield frame
            finally:
                if bar is not None:
                    bar.close()

    @staticmethod
    def _picture(image: Any, name: str) -> Picture:
        """A picture checked before it is queued: an existing image file, or an RGB array."""
        from norface_rt.images import check_rgb_image
        from norface_rt.sources.images import is_image_path

        if isinstance(image, np.ndarray):
            return check_rgb_image(image, name)  # dtype, shape and channels, named
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if os.path.isdir(path) or (os.path.exists(path) and not is_image_path(path)):
                raise ValueError(f"{name}: expected an image file or an HxWx3 uint8 RGB array, "
                                 f"got {path!r}; use analyze_video for videos and folders")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{name}: image file not found: {path}")
            return path
        raise ValueError(f"{name}: expected a path or an HxWx3 uint8 RGB array, got "
                         f"{type(image).__name__}")

    def _stills_pipeline(self) -> _Stills:
        if self._stills is None:
            from norface_rt.sources.feed import FeedSource

            backend = self._require_backend()
            feed = FeedSource(stream_id="image", max_pixels=self._options.get(
                "max_image_pixels", default_for(PipelineOptions, "max_image_pixels")))
            sink = ResultQueue(_IN_FLIGHT + 2)
            opts = PipelineOptions(sources=[feed], sink_buffer=1, **self._options)
            self._stills = _Stills(create_pipeline(opts, [sink], backend=backend), feed, sink)
        return self._stills

    def _analysis(self, sources: list[Any], stream_id: str | None, *, realtime: bool = False,
                  loop: bool = False, keep_images: bool = False, buffer: int = 16,
                  stop_timeout: float = 5.0, progress: bool = False,
                  view: SinkOptions | None = None) -> VideoAnalysis:
        backend = self._require_backend()
        if not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer: expected an int >= 1 (results held ahead of the caller), "
                             f"got {buffer!r}")
        # sink_buffer=1: the result queue is the buffer (``buffer`` results ahead of the caller);
        # it blocks instead of dropping, however long the caller's loop takes.
        opts = PipelineOptions(sources=sources, stream_ids=[stream_id] if stream_id else None,
                               realtime=realtime, loop=loop, sink_buffer=1, **self._options)
        sink = ImageResultQueue(buffer) if keep_images else ResultQueue(buffer)
        outputs: list[Sink] = [sink]
        live = view if view is not None and view.http is not None else None

        def sinks(stream_ids: Sequence[str]) -> list[Sink]:  # opened once the source has
            if live is not None:
                outputs.extend(make_sinks(live, stream_ids, landmarks=opts.landmarks,
                                          blendshapes=opts.blendshapes))
            return outputs

        pipeline = create_pipeline(opts, sinks, backend=backend)
        live_url = None
        if live is not None:
            from norface_rt.sinks.web.sink import HttpViewSink

            live_url = next((s.url for s in outputs if isinstance(s, HttpViewSink)), None)
        return VideoAnalysis(pipeline, sink, stop_timeout, progress=progress, quiet=self._quiet,
                             live_url=live_url)

    def close(self) -> None:
        """Stop the still pipeline and every analysis still open, then release the model;
        harmless to call twice."""
        with shared_filter(self._quiet):
            for analysis in list(self._analyses):
                analysis.close()
            if self._stills is not None:
                stills, self._stills = self._stills, None
                stills.close(timeout=5.0)
            if self._backend is not None:
                backend, self._backend = self._backend, None
                backend.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:  # an analyzer never closed still runs its still pipeline
        if getattr(self, "_stills", None) is not None:
            try:
                self.close()
            except Exception:  # nothing may escape a finaliser
                log.exception("closing an abandoned analyzer failed")

    def __repr__(self) -> str:
        state = "closed" if self._backend is None else self._backend.config.model_id
        return f"Analyzer({state}, backend={self._backend_name!r})"


def _analyzer_signature() -> inspect.Signature:
    """``Analyzer(model_dir=None, landmarker=None, *, backend=..., ...)`` as ``help()`` and
    editors should show it: the API options with the defaults their fields declare."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    for f, opt in (*options_of(PipelineOptions), *options_of(SinkOptions)):
        if opt.api:
            params.append(inspect.Parameter(
                f.name, kind if f.name in ("model_dir", "landmarker") else
                inspect.Parameter.KEYWORD_ONLY, default=default_of(f), annotation=f.type))
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False,
                                 annotation=bool) for name in ("progress", "native_logs")]
    return inspect.Signature(params, return_annotation=None)


Analyzer.__init__.__signature__ = _analyzer_signature()  # type: ignore[attr-defined]


def _frames_of(results: Any) -> Iterator[FrameResult | Mapping[str, Any]]:
    """Whatever the API returned, as frames: a frame's result or message, one picture's faces
    (:class:`Faces`, or a list of :class:`FaceResult`, or one face), or any iterable of frames
    (``analyze_video``'s analysis, ``analyze_images``' results, a JSONL file's lines)."""
    if isinstance(results, Faces):
        yield results.frame
        return
    if isinstance(results, (FrameResult, Mapping)):
        yield results
        return
    if isinstance(results, FaceResult):
        results = [results]
    faces: list[FaceResult] = []
    for i, item in enumerate(results):
        if isinstance(item, FaceResult):
            faces.append(item)
        elif isinstance(item, Faces):
            yield item.frame
        elif isinstance(item, (FrameResult, Mapping)):
            yield item
        else:
            raise ValueError(f"frames[{i}]: expected a FrameResult, a frame message dict or a "
                             f"FaceResult, got {type(item).__name__}")
    if faces:  # one picture's faces, without their frame: a frame of their own
        yield FrameResult(stream_id="image", seq=0, frame_index=0, pts=None, capture_time=0.0,
                          width=0, height=0, dropped=0, faces=faces,
                          untrained=False)


def to_dataframe(results: Any, *, style: str = default_for(SinkOptions, "csv_style"),
                 landmarks: bool = False, blendshapes: bool = False,
                 occurrence_threshold: float = 0.5) -> pd.DataFrame:
    """One row per face per frame, with exactly the columns of ``norface-rt run --csv`` in the
    same ``style`` (``default`` or ``openface``; see :mod:`norface_rt.sinks.files`).

    ``results`` is anything the API returns: ``analyze_image``'s faces (or a list of
    :class:`FaceResult`), one :class:`FrameResult`, or an iterable of them (``analyze_video``'s
    analysis, ``analyze_images``; consumed as they come, so a generator is never held in memory
    whole), or ``frame`` message dicts (a JSONL file's lines). ``landmarks`` / ``blendshapes``
    add those columns, as ``--landmarks`` / ``--blendshapes`` do. Needs pandas (``pip install
    'norface-rt[pandas]'``).
    """
    from norface_rt.extras import require

    require("pandas", "norface_rt.to_dataframe")
    import pandas as pd

    if style not in CSV_STYLES:
        raise ValueError(f"style: expected one of {list(CSV_STYLES)}, got {style!r}")
    layout: CsvLayout | None = None
    pending: list[FrameResult | Mapping[str, Any]] = []  # frames before a face names the labels
    rows: list[dict[str, Any]] = []
    streams: set[str] = set()
    for frame in _frames_of(results):
        if not isinstance(frame, FrameResult) and frame.get("type") != "frame":
            continue
        streams.add(frame.stream_id if isinstance(frame, FrameResult) else frame["stream_id"])
        if style == "openface" and len(streams) > 1:
            raise ValueError(f"style 'openface' has no stream column (OpenFace writes one table "
                             f"per video), got frames of streams {sorted(streams)}; pass one "
                             "stream's frames or use style 'default'")
        faces = frame.faces if isinstance(frame, FrameResult) else frame["faces"]
        if layout is None and faces:
            first = faces[0]
            aus = first.au_occurrence if isinstance(first, FaceResult) else first["au_occurrence"]
            emos = first.emotions if isinstance(first, FaceResult) else first["emotions"]
            layout = CsvLayout(style=style, au_names=tuple(aus), emotion_names=tuple(emos),
                               landmarks=landmarks, blendshapes=blendshapes,
                               occurrence_threshold=occurrence_threshold)
            for f in pending:
                rows.extend(layout.rows(f))
            pending = []
        if layout is None:
            pending.append(frame)
        else:
            rows.extend(layout.rows(frame))
    if layout is None:  # no face at all: the project's default labels, as the CSV does
        layout = CsvLayout(style=style, landmarks=landmarks, blendshapes=blendshapes,
                           occurrence_threshold=occurrence_threshold)
        for f in pending:
            rows.extend(layout.rows(f))
    return pd.DataFrame.from_records(rows, columns=layout.columns)
