"""Collecting face-frames: which media a run covers, and the evaluator that runs the serving path
(sources -> face stage -> backend, all built by the runtime's factory) over them."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from norface_rt.config import EMOTION_NAMES
from norface_rt.sources.images import IMAGE_EXTENSIONS
from norface_rt.types import FramePacket

if TYPE_CHECKING:
    from train.teachers.base import Teacher

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
    or the face was not probed (``probed`` False). ``analysed_index``/``analysed_time_s`` list
    every analysed frame, with a face or not (segments count frames without a face as wrong).
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
    analysed_index: list[int] = field(default_factory=list)
    analysed_time_s: list[float] = field(default_factory=list)
    # teacher name -> its probabilities (our emotion order) per face-frame (--teachers, videos
    # of labelled segments only)
    teacher_prob: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_index)

    def largest_per_frame(self) -> dict[int, int]:
        """frame_index -> the row of that frame's largest face (one person per frame: a second
        face would otherwise interleave)."""
        best: dict[int, int] = {}
        for i, fi in enumerate(self.frame_index):
            if fi not in best or self.area[i] > self.area[best[fi]]:
                best[fi] = i
        return best


@dataclass
class StillRecords:
    """One row per still image: the largest face's outputs, NaN rows where no face was found.

    ``readable`` False: the file could not be decoded (``errors`` says why); such an image has no
    outputs and is not counted as a face not found.
    """

    paths: list[Path]
    readable: np.ndarray  # (N,) bool
    faces_found: np.ndarray  # (N,) int, faces the landmarker found
    au_intensity: np.ndarray  # (N, A)
    au_prob: np.ndarray  # (N, A)
    emotion_prob: np.ndarray  # (N, E)
    blendshapes: list[dict[str, float] | None]  # MediaPipe's reading of the largest face
    errors: list[str]
    seconds: float = 0.0
    # teacher name -> (N, 8) probabilities in our emotion order on the same face (--teachers)
    teacher_prob: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def has_face(self) -> np.ndarray:
        return self.faces_found > 0

    def __len__(self) -> int:
        return len(self.paths)


def _box_area(box: Any) -> float:
    x0, y0, x1, y1 = box
    return float((x1 - x0) * (y1 - y0))


class RealEvaluator:
    """Runs the serving path over media and records, per face, outputs and MediaPipe's views.

    Owns the backend and the probe landmarker (``close()``); each media item, still-image set or
    video gets its own FaceStage (landmarker + tracker), built by the runtime's factory like every
    pipeline's: image mode for stills, video mode with the per-track baseline for videos.

    ``teachers`` (:mod:`train.teachers`) are run on the very faces the model scores in labelled
    stills and segments, each cropping its own box from the face's MediaPipe landmarks, so the
    report shows student and teachers on the same images.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None,
                 landmarker: str | os.PathLike[str] | None = None, *,
                 backend: str = "onnxruntime", threads: int | None = None, max_faces: int = 4,
                 stride: int = 1, max_frames: int | None = None, fidelity: bool = True,
                 fidelity_size: int = 256, fidelity_every: int = 1, baseline: bool = True,
                 teachers: Sequence[Teacher] = ()) -> None:
        from norface_rt.faces.landmarker import Landmarker
        from norface_rt.model_set import load_config
        from norface_rt.paths import resolve_landmarker, resolve_model_dir
        from norface_rt.pipeline.factory import check_landmarker_feeds, open_backend

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
        check_landmarker_feeds(self.landmarker_path, load_config(self.model_dir))
        self.backend = open_backend(self.model_dir, backend, threads=threads)
        self.config = self.backend.config
        self.max_faces = max_faces
        self.stride = stride
        self.max_frames = max_frames
        self.fidelity = fidelity
        self.fidelity_size = fidelity_size
        self.fidelity_every = fidelity_every
        self.baseline = baseline  # per-track baselines in videos (models with a geometry input)
        self.teachers = list(teachers)
        self._probe = (Landmarker(self.landmarker_path, max_faces=1, mode="image")
                       if fidelity else None)

    def evaluate(self, item: MediaItem) -> MediaRecords:
        """All face-frames of one media item (video: every ``stride``-th frame)."""
        from norface_rt.sources.file import FileSource
        from norface_rt.sources.images import ImageSource

        src = (ImageSource(item.path, "evaluate") if item.kind == "images"
               else FileSource(item.path, "evaluate"))
        return self._analyse(src, item, stride=self.stride, max_frames=self.max_frames,
                             until_s=None, fidelity=self.fidelity)

    def evaluate_video(self, path: str | os.PathLike[str], until_s: float | None = None
                       ) -> MediaRecords:
        """Every frame of a video from its start up to ``until_s`` seconds, as ``norface-rt run``
        sees it (video mode, per-track baseline), without fidelity probes: labelled segments are
        cut from this, so the tracker and the baseline have seen what they would in a run."""
        from norface_rt.sources.file import FileSource

        item = MediaItem(Path(path), "video")
        return self._analyse(FileSource(item.path, "evaluate"), item, stride=1, max_frames=None,
                             until_s=until_s, fidelity=False, teachers=True)

    def _analyse(self, src: Any, item: MediaItem, *, stride: int, max_frames: int | None,
                 until_s: float | None, fidelity: bool, teachers: bool = False) -> MediaRecords:
        from norface_rt.pipeline.factory import build_face_stage
        from norface_rt.sources.file import FileSource

        video = item.kind == "video"
        rec = MediaRecords(item, fps=src.info.fps if isinstance(src, FileSource) else None)
        if teachers:
            rec.teacher_prob = {t.name: [] for t in self.teachers}
        stage = build_face_stage(self.landmarker_path, self.config, video=video,
                                 max_faces=self.max_faces, baseline=self.baseline)
        t0 = time.perf_counter()
        decoded = 0
        try:
            src.start()
            for packet in src.iter_frames(READ_TIMEOUT_S):
                decoded += 1
                if (decoded - 1) % stride:
                    continue
                if until_s is not None and self._time_of(packet, rec) >= until_s:
                    break
                self._frame(stage, packet, rec, fidelity, teachers)
                if max_frames is not None and rec.frames >= max_frames:
                    break
            if src.end is not None:
                rec.error = src.end.error
        finally:
            src.stop()
            stage.close()
        rec.seconds = time.perf_counter() - t0
        return rec

    @staticmethod
    def _time_of(packet: FramePacket, rec: MediaRecords) -> float:
        if packet.pts is not None:
            return float(packet.pts)
        if rec.fps:
            return packet.frame_index / rec.fps
        return float(packet.frame_index)

    def _frame(self, stage: Any, packet: FramePacket, rec: MediaRecords,
               fidelity: bool, teachers: bool = False) -> None:
        ff = stage.process(packet)
        rec.frames += 1
        t = self._time_of(packet, rec)
        rec.analysed_index.append(packet.frame_index)
        rec.analysed_time_s.append(t)
        if not ff.faces:
            return
        rec.frames_with_face += 1
        out = self.backend.infer(ff.crops, geometry=ff.geometry, want_normalized=fidelity)
        for i, face in enumerate(ff.faces):
            rec.frame_index.append(packet.frame_index)
            rec.time_s.append(t)
            rec.track_id.append(int(face.track_id))
            rec.area.append(_box_area(face.box))
            rec.au_intensity.append(out.au_intensity[i])
            rec.au_prob.append(out.au_prob[i])
            rec.emotion_prob.append(out.emotion_prob[i])
            rec.frame_blend.append(face.blendshapes)
            if teachers:
                for teacher in self.teachers:
                    rec.teacher_prob[teacher.name].append(
                        teacher.label(packet.image, face.landmarks)[0])
            probe = fidelity and (len(rec) - 1) % self.fidelity_every == 0
            rec.probed.append(probe)
            if probe:
                assert out.normalized is not None
                rec.crop_blend.append(self._blendshapes_of(ff.crops[i]))
                rec.norm_blend.append(self._blendshapes_of(out.normalized[i]))
            else:
                rec.crop_blend.append(None)
                rec.norm_blend.append(None)

    def score_stills(self, paths: Sequence[Path]) -> StillRecords:
        """The largest face of each image, in image mode as ``norface-rt run`` reads a folder
        of stills (images decoded like :class:`~norface_rt.sources.images.ImageSource` does)."""
        from norface_rt.images import read_rgb
        from norface_rt.pipeline.factory import build_face_stage

        cfg = self.config
        n, a, e = len(paths), len(cfg.au_names), len(cfg.emotion_names)
        rec = StillRecords(paths=list(paths), readable=np.ones(n, bool),
                           faces_found=np.zeros(n, np.int64),
                           au_intensity=np.full((n, a), np.nan), au_prob=np.full((n, a), np.nan),
                           emotion_prob=np.full((n, e), np.nan), blendshapes=[None] * n,
                           errors=[], teacher_prob={t.name: np.full((n, len(EMOTION_NAMES)),
                                                                     np.nan)
                                                    for t in self.teachers})
        stage = build_face_stage(self.landmarker_path, cfg, video=False, max_faces=self.max_faces)
        t0 = time.perf_counter()
        try:
            for k, path in enumerate(paths):
                try:
                    image = read_rgb(path)
                except ValueError as exc:
                    rec.readable[k] = False
                    rec.errors.append(str(exc))
                    continue
                ff = stage.process(FramePacket("labelled", k, image, None, time.time()))
                rec.faces_found[k] = len(ff.faces)
                if not ff.faces:
                    continue
                i = max(range(len(ff.faces)), key=lambda j: _box_area(ff.faces[j].box))
                geometry = None if ff.geometry is None else ff.geometry[i:i + 1]
                out = self.backend.infer(ff.crops[i:i + 1], geometry=geometry)
                rec.au_intensity[k] = out.au_intensity[0]
                rec.au_prob[k] = out.au_prob[0]
                rec.emotion_prob[k] = out.emotion_prob[0]
                rec.blendshapes[k] = ff.faces[i].blendshapes
                for teacher in self.teachers:
                    rec.teacher_prob[teacher.name][k] = teacher.label(
                        image, ff.faces[i].landmarks)[0]
        finally:
            stage.close()
        rec.seconds = time.perf_counter() - t0
        return rec

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
