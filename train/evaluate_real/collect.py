"""Collecting face-frames: which media a run covers, and the evaluator that runs the serving path
(sources -> face stage -> backend, all built by the runtime's factory) over them."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from norface_rt.sources.images import IMAGE_EXTENSIONS
from norface_rt.types import FramePacket

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts",
                                     ".mpg", ".mpeg")
READ_TIMEOUT_S = 60.0

MediaKind = Literal["video", "images"]


@dataclass(frozen=True)
class MediaItem:
    """One unit of the report: a video file, or a set of still images (a folder or one file)."""

    path: Path
    kind: MediaKind

    @property
    def name(self) -> str:
        return self.path.name + ("/" if self.path.is_dir() else "")


def expand_media(paths: Sequence[str | os.PathLike[str]]) -> list[MediaItem]:
    """Files and folders from ``--media``: each video is one item, each folder's stills another."""
    if not paths:
        raise ValueError("--media: expected at least one video, image or folder")
    items: list[MediaItem] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"--media: no such file or folder: {p}")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
            items += [MediaItem(f, "video") for f in videos]
            if any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
                items.append(MediaItem(p, "images"))
            if not videos and not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
                raise ValueError(f"--media: folder {p} holds no video "
                                 f"({', '.join(VIDEO_EXTENSIONS)}) or image "
                                 f"({', '.join(IMAGE_EXTENSIONS)}) files")
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(MediaItem(p, "images"))
        else:
            items.append(MediaItem(p, "video"))  # FileSource names the problem if it is not one
    seen: set[tuple[Path, str]] = set()
    unique = []
    for it in items:
        key = (it.path.resolve(), it.kind)
        if key not in seen:
            seen.add(key)
            unique.append(it)
    return unique


@dataclass
class MediaRecords:
    """Every face-frame of one media item: our outputs next to MediaPipe's views of the face.

    Blendshape entries are dicts, or None where MediaPipe found no face (``crop``/``normalized``)
    or the face was not probed (``probed`` False).
    """

    item: MediaItem
    fps: float | None = None
    frames: int = 0
    frames_with_face: int = 0
    error: str | None = None
    seconds: float = 0.0
    frame_index: list[int] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    track_id: list[int] = field(default_factory=list)
    area: list[float] = field(default_factory=list)
    au_intensity: list[np.ndarray] = field(default_factory=list)
    au_prob: list[np.ndarray] = field(default_factory=list)
    emotion_prob: list[np.ndarray] = field(default_factory=list)
    frame_blend: list[dict[str, float] | None] = field(default_factory=list)
    probed: list[bool] = field(default_factory=list)
    crop_blend: list[dict[str, float] | None] = field(default_factory=list)
    norm_blend: list[dict[str, float] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame_index)


class RealEvaluator:
    """Runs the serving path over media and records, per face, outputs and MediaPipe's views.

    Owns the backend and the probe landmarker (``close()``); each media item gets its own
    FaceStage (landmarker + tracker), built by the runtime's factory like every pipeline's.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None,
                 landmarker: str | os.PathLike[str] | None = None, *,
                 backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
                 stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
                 fidelity_size: int = 256, fidelity_every: int = 1) -> None:
        from norface_rt.faces.landmarker import Landmarker
        from norface_rt.paths import resolve_landmarker, resolve_model_dir
        from norface_rt.pipeline.factory import open_backend

        if stride < 1:
            raise ValueError(f"--stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"--max-frames must be >= 1, got {max_frames}")
        if not 64 <= fidelity_size <= 1024:
            raise ValueError(f"--fidelity-size must be in [64, 1024] px, got {fidelity_size}")
        if fidelity_every < 1:
            raise ValueError(f"--fidelity-every must be >= 1, got {fidelity_every}")
        if not 1 <= max_faces <= 64:
            raise ValueError(f"--max-faces must be in [1, 64], got {max_faces}")
        self.model_dir = resolve_model_dir(model_dir)
        self.landmarker_path = resolve_landmarker(landmarker)
        self.backend = open_backend(self.model_dir, backend, threads=threads)
        self.config = self.backend.config
        self.max_faces = max_faces
        self.stride = stride
        self.max_frames = max_frames
        self.fidelity = fidelity
        self.fidelity_size = fidelity_size
        self.fidelity_every = fidelity_every
        self._probe = (Landmarker(self.landmarker_path, max_faces=1, mode="image")
                       if fidelity else None)

    def evaluate(self, item: MediaItem) -> MediaRecords:
        """All face-frames of one media item (video: every ``stride``-th frame)."""
        from norface_rt.pipeline.factory import build_face_stage
        from norface_rt.sources.file import FileSource
        from norface_rt.sources.images import ImageSource

        src = (ImageSource(item.path, "evaluate") if item.kind == "images"
               else FileSource(item.path, "evaluate"))
        video = item.kind == "video"
        rec = MediaRecords(item, fps=src.info.fps if isinstance(src, FileSource) else None)
        stage = build_face_stage(self.landmarker_path, self.config, video=video,
                                 max_faces=self.max_faces)
        t0 = time.perf_counter()
        decoded = 0
        try:
            src.start()
            for packet in src.iter_frames(READ_TIMEOUT_S):
                decoded += 1
                if (decoded - 1) % self.stride:
                    continue
                self._frame(stage, packet, rec)
                if self.max_frames is not None and rec.frames >= self.max_frames:
                    break
            if src.end is not None:
                rec.error = src.end.error
        finally:
            src.stop()
            stage.close()
        rec.seconds = time.perf_counter() - t0
        return rec

    def _frame(self, stage: Any, packet: FramePacket, rec: MediaRecords) -> None:
        ff = stage.process(packet)
        rec.frames += 1
        if not ff.faces:
            return
        rec.frames_with_face += 1
        out = self.backend.infer(ff.crops, geometry=ff.geometry, want_normalized=self.fidelity)
        if packet.pts is not None:
            t = float(packet.pts)
        elif rec.fps:
            t = packet.frame_index / rec.fps
        else:
            t = float(packet.frame_index)
        for i, face in enumerate(ff.faces):
            x0, y0, x1, y1 = face.box
            rec.frame_index.append(packet.frame_index)
            rec.time_s.append(t)
            rec.track_id.append(int(face.track_id))
            rec.area.append(float((x1 - x0) * (y1 - y0)))
            rec.au_intensity.append(out.au_intensity[i])
            rec.au_prob.append(out.au_prob[i])
            rec.emotion_prob.append(out.emotion_prob[i])
            rec.frame_blend.append(face.blendshapes)
            probe = self.fidelity and (len(rec) - 1) % self.fidelity_every == 0
            rec.probed.append(probe)
            if probe:
                assert out.normalized is not None
                rec.crop_blend.append(self._blendshapes_of(ff.crops[i]))
                rec.norm_blend.append(self._blendshapes_of(out.normalized[i]))
            else:
                rec.crop_blend.append(None)
                rec.norm_blend.append(None)

    def _blendshapes_of(self, face: np.ndarray) -> dict[str, float] | None:
        """MediaPipe on one model-sized face, upscaled: at 112 px its detector is unreliable."""
        assert self._probe is not None
        s = self.fidelity_size
        img = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
        faces = self._probe.detect(FramePacket("probe", 0, np.ascontiguousarray(img), None, 0.0))
        return faces[0].blendshapes if faces else None

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        self.backend.close()

    def __enter__(self) -> RealEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
