"""Assembling a ready-to-run pipeline from plain arguments (used by the CLI, tests and benchmarks)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from norface_rt.paths import resolve_landmarker, resolve_model_dir
from norface_rt.pipeline import Pipeline


@dataclass
class PipelineOptions:
    """Everything a user can choose about a run; validated here so errors name the option."""

    sources: Sequence[str]
    stream_ids: Sequence[str] | None = None
    model_dir: str | os.PathLike[str] | None = None
    landmarker: str | os.PathLike[str] | None = None
    backend: str = "onnxruntime"
    # None: the backend's natural device (cpu for onnxruntime/torch, cuda for torch-cuda/tensorrt).
    device: str | None = None
    threads: int | None = None
    max_faces: int = 4
    max_batch: int = 16
    queue_size: int = 8
    realtime: bool = False
    loop: bool = False
    stats_interval: float = 0.0
    # MediaPipe's bundled detector is short-range: faces in wide/group shots are found only when the
    # frame is also scanned in square tiles (side = tiling * min(width, height)). Costs ~3x per frame,
    # so it is on by default only for still images.
    tiling: float | None = None
    # Run normalizer.onnx and classifier.onnx as one fused graph (norface.onnx). Alone it is ~10%
    # faster at batch 1, but inside the pipeline on 2 cores it measured slower (its ORT threads spin
    # and compete with MediaPipe), and stats then report one "infer" stage. See benchmarks/.
    fused: bool = False
    # Warp faces on the backend's device from the uploaded frame (torch-cuda) instead of on the CPU.
    device_align: bool = False
    source_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.sources:
            raise ValueError("sources: expected at least one SOURCE (file, folder, rtsp:// URL or /dev/videoN)")
        if self.stream_ids is not None and len(self.stream_ids) != len(self.sources):
            raise ValueError(f"--stream-id: expected one per source ({len(self.sources)}), "
                             f"got {len(self.stream_ids)}")
        if not 1 <= self.max_faces <= 64:
            raise ValueError(f"--max-faces must be in [1, 64], got {self.max_faces}")
        if not 1 <= self.max_batch <= 1024:
            raise ValueError(f"--max-batch must be in [1, 1024], got {self.max_batch}")
        if not 1 <= self.queue_size <= 1024:
            raise ValueError(f"--queue-size must be in [1, 1024], got {self.queue_size}")
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ValueError(f"--threads must be in [1, 256], got {self.threads}")
        if self.tiling is not None and not 0.2 <= self.tiling <= 1.0:
            raise ValueError(f"--tiling must be in [0.2, 1.0], got {self.tiling}")
        if self.stats_interval < 0:
            raise ValueError(f"--stats-interval must be >= 0 seconds, got {self.stats_interval}")
        if self.device_align and self.backend != "torch-cuda":
            raise ValueError(f"--device-align needs --backend torch-cuda, got --backend {self.backend}")


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


def create_pipeline(opts: PipelineOptions, sinks: Sequence[Any]) -> Pipeline:
    """Resolve models, open sources and backends, and wire them into a :class:`Pipeline`.

    Model files are resolved before any source is opened, so a missing model fails fast with the
    list of places searched instead of after a camera was grabbed.
    """
    from norface_rt.backends import load_backend
    from norface_rt.faces.align import Aligner
    from norface_rt.faces.landmarker import Landmarker
    from norface_rt.faces.stage import FaceStage
    from norface_rt.faces.tracker import Tracker
    from norface_rt.sources.factory import open_source

    opts.validate()
    model_dir = resolve_model_dir(opts.model_dir)
    landmarker_path = resolve_landmarker(opts.landmarker)
    backend_kw: dict[str, Any] = {}
    if opts.backend == "onnxruntime":
        if opts.threads:
            backend_kw["intra_op_threads"] = opts.threads
        if opts.fused:
            backend_kw["split"] = False
    if opts.backend == "torch":
        backend_kw["device"] = opts.device or "cpu"
    if opts.backend == "tensorrt":
        backend_kw["device"] = opts.device or "cuda"
        if opts.fused:
            backend_kw["graphs"] = "fused"
    if opts.backend == "torch-cuda":
        backend_kw["device"] = opts.device or "cuda"
        # fp16 only where it is fast; on the CPU the same bucket code runs in fp32, without graphs.
        backend_kw["fp16"] = str(backend_kw["device"]).startswith("cuda")
    backend = load_backend(model_dir, opts.backend, **backend_kw)
    cfg = backend.config
    # One throw-away inference so lazy initialisation (ORT arena, kernels) is not paid by the first
    # live frame.
    backend.infer(np.zeros((1, cfg.img_size, cfg.img_size, 3), np.uint8))

    from norface_rt.sources.file import FileSource

    # Open once with derived ids to learn each source's kind and default id, then re-open where an
    # id must change or file-only options apply (opening only probes; nothing is started yet).
    sources = [open_source(uri, opts.stream_ids[i] if opts.stream_ids else None)
               for i, uri in enumerate(opts.sources)]
    ids = [s.stream_id for s in sources] if opts.stream_ids else _unique([s.stream_id for s in sources])
    file_kw: dict[str, Any] = dict(opts.source_kwargs)
    if opts.realtime:
        file_kw["realtime"] = True
    if opts.loop:
        file_kw["loop"] = True
    for i, (uri, src) in enumerate(zip(opts.sources, sources)):
        kw = file_kw if isinstance(src, FileSource) else {}
        if ids[i] != src.stream_id or kw:
            sources[i] = open_source(uri, ids[i], **kw)

    def face_stage(stream_id: str) -> FaceStage:
        src = next(s for s in sources if s.stream_id == stream_id)
        video = _is_video(src)
        tiling = opts.tiling if opts.tiling is not None or video else 1.0
        lm = Landmarker(Path(landmarker_path), max_faces=opts.max_faces,
                        mode="video" if video else "image", tiling=tiling)
        return FaceStage(lm, Tracker(), Aligner(cfg), warp_crops=not opts.device_align)

    return Pipeline(sources, face_stage, backend, sinks, max_batch=opts.max_batch,
                    queue_size=opts.queue_size, stats_interval=opts.stats_interval,
                    device_align=opts.device_align)


def _is_video(src: Any) -> bool:
    """Image folders need MediaPipe's image mode: unrelated photos must not be tracked as a video."""
    from norface_rt.sources.images import ImageSource

    return not isinstance(src, ImageSource)
