"""The one factory: backends, face stages, sources and sinks built the same way for the CLI
(``run``, ``normalize``, ``bench``), the Python API, the benchmarks and the evaluation tools.

Each recipe lives here once: how a backend is opened and warmed up (:func:`open_backend`, its
options from the backend table), how a stream's faces are found, tracked and aligned
(:func:`build_face_stage`), which sinks the output options ask for (:func:`make_sinks`), and how
they are wired into a :class:`~norface_rt.pipeline.runner.Pipeline` (:func:`create_pipeline`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from norface_rt.backends import DEFAULT_BACKEND, backend_spec, connect_backend, load_backend
from norface_rt.backends.base import Backend
from norface_rt.config import ModelConfig
from norface_rt.files import check_distinct_files
from norface_rt.flags import default_for
from norface_rt.model_set import load_config, verify_model_set
from norface_rt.paths import resolve_landmarker, resolve_model_dir
from norface_rt.pipeline.options import PipelineOptions, SinkOptions, max_faces_for
from norface_rt.pipeline.runner import Pipeline
from norface_rt.sinks.base import Sink
from norface_rt.sources.base import Source

if TYPE_CHECKING:
    from norface_rt.faces.stage import FaceFinder, FaceStage


def backend_options(name: str, *, device: str | None = None, threads: int | None = None
                    ) -> dict[str, Any]:
    """Constructor options of backend ``name`` for a device (None: the backend's natural one)
    and a thread count (None: the library's choice), as its row of the backend table says."""
    return backend_spec(name).options(device, threads)


def open_backend(model_dir: str | os.PathLike[str], name: str = DEFAULT_BACKEND, *,
                 device: str | None = None, threads: int | None = None,
                 warm_up: bool = False) -> Backend:
    """:func:`~norface_rt.backends.load_backend` with :func:`backend_options`; ``warm_up`` runs
    one throw-away inference so lazy initialisation (ORT arena, kernels) is not paid by the
    first live frame."""
    backend = load_backend(model_dir, name, **backend_options(name, device=device, threads=threads))
    if warm_up:
        cfg = backend.config
        geometry = (np.asarray([cfg.geometry_reference], np.float32) if cfg.geometry_dim
                    else None)
        backend.infer(np.zeros((1, cfg.img_size, cfg.img_size, cfg.in_chans), np.uint8),
                      geometry=geometry)
    return backend


def open_remote_backend(opts: PipelineOptions) -> Backend:
    """The remote backend of ``opts`` (Triton): the model and its config come from the server; a
    ``--model-dir`` given as well must hold the same model. Warmed up like :func:`open_backend`,
    which also proves the whole path (shared memory included) before a source is opened."""
    expected = None
    if opts.model_dir:  # checked against its manifest like any model set that is read
        local = resolve_model_dir(opts.model_dir)
        verify_model_set(local)
        expected = load_config(local)
    assert opts.triton_url is not None  # validate() checked it
    backend = connect_backend(opts.triton_url, opts.backend, model_name=opts.triton_model,
                              expected=expected, timeout_s=opts.triton_timeout,
                              retry_s=opts.triton_retry)
    try:
        check_landmarker_feeds(resolve_landmarker(opts.landmarker), backend.config)
        cfg = backend.config
        geometry = (np.asarray([cfg.geometry_reference], np.float32) if cfg.geometry_dim else None)
        backend.infer(np.zeros((1, cfg.img_size, cfg.img_size, cfg.in_chans), np.uint8),
                      geometry=geometry)
    except BaseException:
        backend.close()
        raise
    return backend


def is_video_source(src: Source) -> bool:
    """Stills (image files and folders, arrays) need MediaPipe's image mode: unrelated photos
    must not be tracked as a video. Everything else (files, cameras, streams) is video."""
    return not src.stills


def build_face_stage(landmarker: str | os.PathLike[str], cfg: ModelConfig, *, video: bool,
                     max_faces: int | None,
                     tiling: float | None = default_for(PipelineOptions, "tiling"),
                     warp_crops: bool = True,
                     baseline: bool = default_for(PipelineOptions, "baseline")) -> FaceStage:
    """Landmarker + tracker + aligner for one stream: video mode without tiling for videos,
    image mode with full-window tiling (``tiling`` 1.0) for stills unless told otherwise. For a
    model with a geometry input, also its geometry reader, with a per-track neutral baseline
    in videos unless ``baseline`` is False (a still has no second look at the same person).
    ``max_faces``, ``tiling`` and ``baseline`` are the run options of those names
    (:class:`PipelineOptions` declares their defaults; ``max_faces`` None keeps the default of
    the stream's kind, :func:`~norface_rt.pipeline.options.max_faces_for`)."""
    from norface_rt.faces.landmarker import Landmarker

    if tiling is None and not video:
        tiling = 1.0
    lm = Landmarker(Path(landmarker), max_faces=max_faces_for(max_faces, video=video),
                    mode="video" if video else "image",
                    tiling=tiling)
    return assemble_face_stage(lm, cfg, video=video, warp_crops=warp_crops, baseline=baseline)


def assemble_face_stage(finder: FaceFinder, cfg: ModelConfig, *, video: bool,
                        warp_crops: bool = True,
                        baseline: bool = default_for(PipelineOptions, "baseline")) -> FaceStage:
    """The face stage around a landmarker already made: tracker, aligner and, for a model with
    a geometry input, its geometry reader (see :func:`build_face_stage`). Separate so that
    landmarks found earlier can be replayed through the same stage (the GPU kit, on a machine
    without MediaPipe)."""
    from norface_rt.faces.align import Aligner
    from norface_rt.faces.geometry import TrackBaseline
    from norface_rt.faces.stage import FaceStage, GeometryReader
    from norface_rt.faces.tracker import Tracker

    geometry = None
    if cfg.geometry_dim:
        tb = (TrackBaseline(cfg.geometry_reference, cfg.geometry_spread,
                            neutral_radius=cfg.geometry_neutral_radius)
              if video and baseline else None)
        geometry = GeometryReader(cfg.blendshape_names, tb)
    return FaceStage(finder, Tracker(), Aligner(cfg), warp_crops=warp_crops, geometry=geometry,
                     stills=not video)


def check_landmarker_feeds(landmarker: str | os.PathLike[str], cfg: ModelConfig) -> None:
    """A model that consumes blendshapes needs a landmarker bundle that scores them; say so
    before anything is opened rather than failing on every frame."""
    if "blendshapes" not in cfg.geometry_inputs:
        return
    from norface_rt.faces.landmarker import BLENDSHAPES_MEMBER, has_blendshapes

    if not has_blendshapes(landmarker):
        raise ValueError(f"--landmarker: model {cfg.model_id!r} consumes MediaPipe blendshapes, but "
                         f"{landmarker} has no {BLENDSHAPES_MEMBER} (use "
                         "face_landmarker_v2_with_blendshapes.task)")


def make_sinks(opts: SinkOptions, stream_ids: Sequence[str], *, landmarks: bool,
               blendshapes: bool, also_written: Sequence[tuple[str, str | os.PathLike[str]]] = (),
               one_image: bool = False) -> list[Sink]:
    """The sinks ``opts`` asks for, for the streams ``stream_ids`` whose messages carry
    landmarks / blendshapes as the run options say (the CSV's columns follow them).
    ``one_image``: the run's only input is one image file, so a picture overlay is written to
    its path itself.

    Everything is checked before anything is opened: the options, and that no two outputs
    (nor ``also_written``, files the caller writes itself, such as ``--stats-json``) would write
    one file, counting the per-stream files of these streams. Outputs that can fail on what
    other programs hold (a busy port, a NATS server that is away) are opened first, files last,
    so a run refused at start-up leaves no empty files behind; output folders are created
    (asking for out/results.csv means "make out/ if needed"). On error, sinks already opened
    are closed again."""
    opts.validate()
    check_distinct_files([*opts.output_files(stream_ids), *also_written])
    multiple = len(stream_ids) > 1
    curve = None
    if opts.curve_secret is not None:
        from norface_rt.wire.curve import CurveServer

        curve = CurveServer(Path(opts.curve_secret),
                            Path(opts.curve_clients) if opts.curve_clients else None)
    sinks: list[Sink] = []
    try:
        endpoint = opts.endpoint
        if endpoint is not None:
            from norface_rt.sinks.zmq_pub import ZmqPublisher

            sinks.append(ZmqPublisher(endpoint, sndhwm=opts.sndhwm, allow_remote=opts.allow_remote,
                                      curve=curve))
        if opts.push:
            from norface_rt.sinks.zmq_pub import ZmqPush

            sinks.append(ZmqPush(opts.push, hwm=opts.push_hwm, policy=opts.push_policy,
                                 send_timeout=opts.push_timeout, allow_remote=opts.allow_remote,
                                 curve=curve, ack_endpoint=opts.push_ack))
        if opts.metrics_port is not None:
            from norface_rt.sinks.metrics import MetricsSink

            sinks.append(MetricsSink(opts.metrics_port, host=opts.metrics_host))
        if opts.http is not None:
            from norface_rt.sinks.web.sink import HttpViewSink

            sinks.append(HttpViewSink(opts.http, token=opts.http_token,
                                      allow_remote=opts.allow_remote, max_fps=opts.http_fps))
        if opts.nats:
            from norface_rt.sinks.nats_js import NatsJetStreamSink

            sinks.append(NatsJetStreamSink(opts.nats, opts.nats_stream, subject_prefix=opts.nats_prefix))
        if opts.show:
            from norface_rt.sinks.overlay import ShowSink

            sinks.append(ShowSink())
        for path in (opts.jsonl, opts.csv, opts.overlay):
            if path:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if opts.jsonl:
            from norface_rt.sinks.files import JsonlSink

            sinks.append(JsonlSink(Path(opts.jsonl)))
        if opts.csv:
            from norface_rt.sinks.files import CsvSink

            sinks.append(CsvSink(Path(opts.csv), style=opts.csv_style, landmarks=landmarks,
                                 blendshapes=blendshapes, multiple=multiple))
        if opts.overlay:
            from norface_rt.sinks.overlay import (
                MultiStreamOverlaySink,
                OverlayImageSink,
                is_image_overlay,
            )

            if is_image_overlay(opts.overlay):  # stills: a picture per input
                sinks.append(OverlayImageSink(Path(opts.overlay), single=one_image,
                                              panel=opts.overlay_panel))
            else:
                sinks.append(MultiStreamOverlaySink(Path(opts.overlay), multiple=multiple,
                                                    panel=opts.overlay_panel))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    return sinks


def _unique(ids: Sequence[str]) -> list[str]:
    """Make derived stream ids unique (two files called clip.mp4 -> clip, clip-1)."""
    seen: dict[str, int] = {}
    out = []
    for base in ids:
        base = base.lstrip("_") or "stream"  # ids starting with "_" are reserved (e.g. "_stats")
        n = seen.get(base, -1) + 1
        seen[base] = n
        out.append(base if n == 0 else f"{base}-{n}")
    return out


def _accepted(cls: type, kw: dict[str, Any]) -> dict[str, Any]:
    """The options of ``kw`` that the constructor of ``cls`` takes, where they differ from its
    defaults (a source is re-opened only when something changes)."""
    params = inspect.signature(cls).parameters
    return {k: v for k, v in kw.items() if k in params and params[k].default != v}


def open_sources(opts: PipelineOptions) -> list[Source]:
    """The sources of ``opts`` with unique stream ids and the options each kind takes applied
    (opened, that is probed, but not started). A :class:`Source` object given instead of a path
    (the Python API's arrays) is used as it is, with its own stream id."""
    from norface_rt.sources.factory import open_source

    # Open once with derived ids to learn each source's kind and default id, then re-open where an
    # id must change or options apply (opening only probes; nothing is started yet).
    sources = [uri if isinstance(uri, Source)
               else open_source(uri, opts.stream_ids[i] if opts.stream_ids else None)
               for i, uri in enumerate(opts.sources)]
    ids = [s.stream_id for s in sources] if opts.stream_ids else _unique([s.stream_id for s in sources])
    wanted: dict[str, Any] = {"skip_corrupt": opts.skip_corrupt,
                              "max_reconnect_time": opts.reconnect_timeout,
                              "max_reconnect_tries": opts.reconnect_tries,
                              "max_pixels": opts.max_image_pixels,
                              **opts.source_kwargs}
    if opts.realtime:
        wanted["realtime"] = True
    if opts.loop:
        wanted["loop"] = True
    try:
        for i, (uri, src) in enumerate(zip(opts.sources, sources)):
            if isinstance(uri, Source):
                continue
            kw = _accepted(type(src), wanted)
            if ids[i] != src.stream_id or kw:
                src.stop(0.0)  # releases what probing opened (a video container)
                sources[i] = open_source(uri, ids[i], **kw)
    except BaseException:
        for src in sources:
            src.stop(0.0)
        raise
    return sources


def create_pipeline(opts: PipelineOptions,
                    sinks: Sequence[Sink] | Callable[[Sequence[str]], Sequence[Sink]], *,
                    backend: Backend | None = None) -> Pipeline:
    """Resolve models, open backend and sources, and wire them into a :class:`Pipeline`.

    Model files are resolved (and checked against their manifest) before anything else is
    opened, so a missing or damaged model fails fast with the list of places searched instead of
    after a camera was grabbed. A ``backend`` already open (the Python API keeps one per
    :class:`~norface_rt.Analyzer`) is used instead of loading the model again; it stays open when
    the pipeline stops (its owner closes it). ``sinks`` may be a function that makes them: it is
    called only once the model and the sources have opened, so a run that fails at start-up
    leaves no output files behind (and binds no socket).
    """
    opts.validate()
    own_backend = backend is None
    # Missing files fail first, before anything is opened.
    model_dir = (resolve_model_dir(opts.model_dir)
                 if own_backend and not backend_spec(opts.backend).remote else None)
    landmarker_path = resolve_landmarker(opts.landmarker)
    if backend is None:
        if model_dir is None:
            backend = open_remote_backend(opts)
        else:
            # the backend checks the model set against its manifest before reading any of it
            backend = open_backend(model_dir, opts.backend, device=opts.device,
                                   threads=opts.threads, warm_up=True)
    opened: list[Source] = []
    try:
        check_landmarker_feeds(landmarker_path, backend.config)
        opened = sources = open_sources(opts)
        cfg = backend.config
        by_id = {s.stream_id: s for s in sources}
        made = (list(sinks([s.stream_id for s in sources])) if callable(sinks)
                else list(sinks))

        def face_stage(stream_id: str) -> FaceStage:
            return build_face_stage(landmarker_path, cfg, video=is_video_source(by_id[stream_id]),
                                    max_faces=opts.max_faces, tiling=opts.tiling,
                                    warp_crops=not opts.device_align, baseline=opts.baseline)

        try:
            return Pipeline(sources, face_stage, backend, made, max_batch=opts.max_batch,
                            queue_size=opts.queue_size, stats_interval=opts.stats_interval,
                            device_align=opts.device_align, landmarks=opts.landmarks,
                            blendshapes=opts.blendshapes, smooth=opts.smooth or None,
                            sink_buffer=opts.sink_buffer, sink_timeout=opts.sink_timeout)
        except BaseException:
            if callable(sinks):  # made here: close them again
                for sink in made:
                    sink.close()
            raise
    except BaseException:
        for src in opened:
            src.stop(0.0)
        if own_backend:
            backend.close()
        raise
