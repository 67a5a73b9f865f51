"""``norface-rt normalize``: show identity normalization at work.

For every face, the aligned original crop, the normalized face the model re-renders on its target
identity, and the target itself are written side by side: PNGs for images and image folders, one
mp4 for a video (the largest face of each frame). This is the quickest way to see whether a model's
normalization keeps the expression while removing identity, pose and background.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from norface_rt.flags import default_for
from norface_rt.images import write_rgb
from norface_rt.model_set import read_target_image
from norface_rt.paths import resolve_landmarker, resolve_model_dir
from norface_rt.pipeline.factory import build_face_stage, is_video_source, open_backend
from norface_rt.pipeline.options import PipelineOptions
from norface_rt.sources.factory import open_source
from norface_rt.sources.file import FileSource
from norface_rt.types import FaceFrame
from norface_rt.video import Mp4Writer

READ_TIMEOUT_S = 30.0

LABELS = ("original", "normalized", "target")


@dataclass
class NormalizeReport:
    files: list[Path] = field(default_factory=list)
    frames: int = 0
    faces: int = 0
    error: str | None = None


def _panel(crop: np.ndarray, normalized: np.ndarray, target: np.ndarray, scale: int) -> np.ndarray:
    row = np.concatenate([crop, normalized, target], axis=1)
    if scale != 1:
        row = cv2.resize(row, (row.shape[1] * scale, row.shape[0] * scale),
                         interpolation=cv2.INTER_NEAREST)
    w = row.shape[1] // 3
    for i, label in enumerate(LABELS):
        cv2.putText(row, label, (i * w + 4, 14 * scale // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def _target_image(model_dir: Path, size: int) -> np.ndarray:
    target = read_target_image(model_dir, size)
    if target is not None:
        return target
    # Older model sets carry no target.png: show a grey placeholder rather than failing.
    img = np.full((size, size, 3), 64, np.uint8)
    cv2.putText(img, "n/a", (size // 3, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200))
    return img


def normalize_media(input_uri: str, out_dir: str | os.PathLike[str], *,
                    model_dir: str | os.PathLike[str] | None = None,
                    landmarker: str | os.PathLike[str] | None = None,
                    max_faces: int | None = default_for(PipelineOptions, "max_faces"),
                    backend: str = default_for(PipelineOptions, "backend"),
                    scale: int) -> NormalizeReport:
    if not 1 <= scale <= 8:
        raise ValueError(f"scale must be in [1, 8], got {scale}")
    mdir = resolve_model_dir(model_dir)
    lm_path = resolve_landmarker(landmarker)
    be = open_backend(mdir, backend)
    cfg = be.config
    target = _target_image(mdir, cfg.img_size)
    src = open_source(input_uri)
    video = is_video_source(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = build_face_stage(lm_path, cfg, video=video, max_faces=max_faces)
    report = NormalizeReport()
    writer: Mp4Writer | None = None
    try:
        src.start()
        for item in src.iter_frames(READ_TIMEOUT_S):
            ff = stage.process(item)
            report.frames += 1
            report.faces += len(ff.faces)
            normalized = (be.infer(ff.crops, geometry=ff.geometry, want_normalized=True).normalized
                          if len(ff.faces) else None)
            if video:
                if writer is None:
                    fps = src.info.fps if isinstance(src, FileSource) else None
                    writer = Mp4Writer(out / f"{src.stream_id}-normalized.mp4", fps or 25.0)
                    report.files.append(writer.path)
                writer.write(_video_panel(ff, normalized, target, scale, cfg.img_size))
            else:
                for i, face in enumerate(ff.faces):
                    assert normalized is not None
                    p = out / f"{src.stream_id}-{item.frame_index:05d}-face{face.track_id}.png"
                    write_rgb(p, _panel(ff.crops[i], normalized[i], target, scale))
                    report.files.append(p)
        report.error = src.end.error if src.end is not None else None
    finally:
        src.stop()
        stage.close()
        be.close()
        if writer is not None:
            writer.close()
    return report


def _video_panel(ff: FaceFrame, normalized: np.ndarray | None, target: np.ndarray, scale: int,
                 size: int) -> np.ndarray:
    if not ff.faces or normalized is None:
        blank = np.zeros((size, size, 3), np.uint8)
        cv2.putText(blank, "no face", (size // 5, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (200, 200, 200), 1, cv2.LINE_AA)
        return _panel(blank, blank, target, scale)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in ff.faces]
    i = int(np.argmax(areas))
    return _panel(ff.crops[i], normalized[i], target, scale)
