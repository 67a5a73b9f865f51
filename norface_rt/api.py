"""The Python API: analyse pictures and videos from a notebook or a service.

    import norface_rt
    analyzer = norface_rt.Analyzer()                  # the CLI's options: model_dir, landmarker, ...
    faces = analyzer.analyze_image("photo.jpg")       # or an HxWx3 uint8 RGB array
    for frame in analyzer.analyze_video("clip.mp4"):  # any source the CLI takes
        ...
    df = norface_rt.to_dataframe(frames)              # pandas (the 'pandas' extra)

Nothing here analyses anything by itself: every call builds the CLI's pipeline through the one
factory (:func:`norface_rt.pipeline.create_pipeline`) with the same sources, face stages, threads
and result types, and reads its typed results from a bounded queue
(:class:`~norface_rt.sinks.results.ResultQueue`). Memory therefore stays bounded for any length
of video, and leaving a loop early stops the pipeline's threads. The model is loaded once per
:class:`Analyzer` and shared by its calls.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from norface_rt.backends.base import Backend
from norface_rt.config import ModelConfig
from norface_rt.flags import default_for, default_of, options_of
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

log = logging.getLogger(__name__)

Source = str | os.PathLike[str]
_POLL_S = 0.2  # how often a waiting iteration checks for a failed pipeline thread


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
                 live_url: str | None = None) -> None:
        self.pipeline = pipeline
        # The live view's address when the analysis serves one (Analyzer(http=...)).
        self.live_url = live_url
        self._sink = sink
        self._stop_timeout = stop_timeout
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
        try:
            self.pipeline.start()
            while True:
                item = self._sink.get(_POLL_S)
                if item is None:
                    self.pipeline.raise_if_failed()
                    continue
                if isinstance(item, FrameResult):
                    self.frames += 1
                    yield item
                    continue
                self.ended = True  # the stream's eos message
                self.error = item.error
                if self.error:
                    warnings.warn(f"stream {item.stream_id!r} ended with an error after "
                                  f"{self.frames} frame(s): {self.error}", StreamWarning,
                                  stacklevel=2)
                return
        finally:
            self.close()

    def close(self) -> None:
        """Stop the pipeline (if running) and release the source; harmless to call twice."""
        if self._closed:
            return
        self._closed = True
        self._sink.cancel()
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


class Analyzer:
    """Analyses pictures and videos with one model, loaded once (not thread-safe: one call at a
    time per Analyzer; several Analyzers may run side by side).

    Its options are the ``norface-rt run`` options of the same name, forwarded to the same
    :class:`~norface_rt.pipeline.options.PipelineOptions` (so they share every default and every
    check): ``model_dir`` and ``landmarker`` are looked up as the CLI does when None; ``backend``
    (onnxruntime, torch, torch-cuda, tensorrt) and ``device``/``threads`` choose how the model
    runs; ``max_faces``, ``tiling``, ``baseline`` and ``smooth`` (seconds; None = off) shape the
    face stage and the outputs; ``max_batch`` and ``queue_size`` the pipeline
    (:meth:`PipelineOptions.api_options` lists them).

    ``http`` (``[HOST:]PORT``, loopback unless ``allow_remote``; port 0 picks a free one) serves
    the live view of every video analysis while it runs, as ``run --http`` does: open
    :attr:`VideoAnalysis.live_url` in a browser beside the notebook (with a fixed port, every
    analysis has the same address). ``http_token`` (every request must carry it) and
    ``http_fps`` are the CLI's too (:meth:`SinkOptions.api_options`). The view never slows the
    analysis: a viewer that falls behind misses images, counted. One analysis serves a port at
    a time (close or finish one before the next on the same port); ``analyze_image`` serves
    none.

    Missing model files raise at once (FileNotFoundError naming where they were looked for);
    absurd values raise ValueError naming the option, and an option the API does not take
    raises TypeError.
    """

    def __init__(self, model_dir: Source | None = None, landmarker: Source | None = None,
                 **options: Any) -> None:
        from norface_rt.paths import resolve_landmarker, resolve_model_dir

        run_taken, view_taken = PipelineOptions.api_options(), SinkOptions.api_options()
        unknown = sorted(set(options) - set(run_taken) - set(view_taken))
        if unknown:
            raise TypeError(f"Analyzer() got unexpected option(s) {unknown}; it takes "
                            f"{[*run_taken, *view_taken]}")
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
        self._backend: Backend | None = open_backend(resolved_model, run.backend,
                                                     device=run.device, threads=run.threads,
                                                     warm_up=True)
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
                      buffer: int = 16, stop_timeout: float = 5.0, http: str | None = None,
                      http_token: str | None = None) -> VideoAnalysis:
        """The frames of ``source`` (a video file, image file or folder, ``rtsp://`` URL,
        ``/dev/videoN`` or ``webcam:N``), one :class:`FrameResult` each, in order.

        The source is opened (and checked) now; analysis runs while the result is iterated, at
        most ``buffer`` results ahead of the caller. ``keep_images`` keeps each frame's RGB
        pixels in ``FrameResult.image`` (for drawing; costs a frame of memory per result
        buffered). ``realtime``/``loop`` are the CLI's file options.

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
        return self._analysis([os.fspath(source)], stream_id, realtime=realtime, loop=loop,
                              keep_images=keep_images, buffer=buffer, stop_timeout=stop_timeout,
                              view=view)

    def analyze_image(self, image: Source | np.ndarray) -> list[FaceResult]:
        """The faces of one picture: an image file, or an HxWx3 uint8 RGB array (as read by
        ``PIL.Image.open(p).convert("RGB")`` through ``np.asarray``, or OpenCV's BGR flipped
        with ``img[..., ::-1]``). An unreadable file or a malformed array raises ValueError
        saying what was wrong (dtype, shape or channel count)."""
        from norface_rt.images import check_rgb_image
        from norface_rt.sources.arrays import ArraySource
        from norface_rt.sources.images import ImageSource, is_image_path

        if isinstance(image, np.ndarray):
            check_rgb_image(image, "image")  # dtype, shape and channels, named as the caller's
            src: Any = ArraySource([image], stream_id="image")
        elif isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if os.path.isdir(path) or (os.path.exists(path) and not is_image_path(path)):
                raise ValueError(f"image: expected an image file or an HxWx3 uint8 RGB array, got "
                                 f"{path!r}; use analyze_video for videos and folders")
            src = ImageSource(path, stream_id="image",  # missing or unreadable: raises here
                              max_pixels=self._options.get("max_image_pixels",
                                                           default_for(PipelineOptions,
                                                                       "max_image_pixels")))
        else:
            raise ValueError(f"image: expected a path or an HxWx3 uint8 RGB array, got "
                             f"{type(image).__name__}")
        with self._analysis([src], None, buffer=2) as analysis:
            frames = list(analysis)
        if len(frames) != 1:
            raise RuntimeError(f"expected one frame for one picture, got {len(frames)}"
                               + (f" ({analysis.error})" if analysis.error else ""))
        if frames[0].error:
            raise ValueError(f"image: {frames[0].error}")
        return frames[0].faces

    def _analysis(self, sources: list[Any], stream_id: str | None, *, realtime: bool = False,
                  loop: bool = False, keep_images: bool = False, buffer: int = 16,
                  stop_timeout: float = 5.0, view: SinkOptions | None = None) -> VideoAnalysis:
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
        return VideoAnalysis(pipeline, sink, stop_timeout, live_url=live_url)

    def close(self) -> None:
        """Release the model; harmless to call twice."""
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

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
    return inspect.Signature(params, return_annotation=None)


Analyzer.__init__.__signature__ = _analyzer_signature()  # type: ignore[attr-defined]


def to_dataframe(frames: Iterable[FrameResult | dict[str, Any]], *,
                 style: str = default_for(SinkOptions, "csv_style"),
                 landmarks: bool = False, blendshapes: bool = False,
                 occurrence_threshold: float = 0.5) -> pd.DataFrame:
    """One row per face per frame, with exactly the columns of ``norface-rt run --csv`` in the
    same ``style`` (``default`` or ``openface``; see :mod:`norface_rt.sinks.files`).

    ``frames`` are :class:`FrameResult` objects (what ``analyze_video`` yields; consumed as they
    come, so a generator is never held in memory whole) or ``frame`` message dicts (a JSONL
    file's lines). ``landmarks`` / ``blendshapes`` add those columns, as ``--landmarks`` /
    ``--blendshapes`` do. Needs pandas (``pip install 'norface-rt[pandas]'``).
    """
    from norface_rt.extras import require

    require("pandas", "norface_rt.to_dataframe")
    import pandas as pd

    if style not in CSV_STYLES:
        raise ValueError(f"style: expected one of {list(CSV_STYLES)}, got {style!r}")
    layout: CsvLayout | None = None
    pending: list[dict[str, Any]] = []  # frames seen before the first face names the labels
    rows: list[dict[str, Any]] = []
    streams: set[str] = set()
    for i, frame in enumerate(frames):
        if isinstance(frame, FrameResult):
            msg = frame.to_message(landmarks=landmarks, blendshapes=blendshapes)
        elif isinstance(frame, dict):
            msg = frame
        else:
            raise ValueError(f"frames[{i}]: expected a FrameResult or a frame message dict, got "
                             f"{type(frame).__name__}")
        if msg.get("type") != "frame":
            continue
        streams.add(msg["stream_id"])
        if style == "openface" and len(streams) > 1:
            raise ValueError(f"style 'openface' has no stream column (OpenFace writes one table "
                             f"per video), got frames of streams {sorted(streams)}; pass one "
                             "stream's frames or use style 'default'")
        if layout is None and msg["faces"]:
            first = msg["faces"][0]
            layout = CsvLayout(style=style, au_names=tuple(first["au_occurrence"]),
                               emotion_names=tuple(first["emotions"]), landmarks=landmarks,
                               blendshapes=blendshapes, occurrence_threshold=occurrence_threshold)
            for m in pending:
                rows.extend(layout.rows(m))
            pending = []
        if layout is None:
            pending.append(msg)
        else:
            rows.extend(layout.rows(msg))
    if layout is None:  # no face at all: the project's default labels, as the CSV does
        layout = CsvLayout(style=style, landmarks=landmarks, blendshapes=blendshapes,
                           occurrence_threshold=occurrence_threshold)
        for m in pending:
            rows.extend(layout.rows(m))
    return pd.DataFrame.from_records(rows, columns=layout.columns)
