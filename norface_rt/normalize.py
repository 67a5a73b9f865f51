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
from typing import Any

import cv2
import numpy as np

from norface_rt.backends import load_backend
from norface_rt.export import TARGET_FILE
from norface_rt.faces.align import Aligner
from norface_rt.faces.landmarker import Landmarker
from norface_rt.faces.stage import FaceStage
from norface_rt.faces.tracker import Tracker
from norface_rt.paths import resolve_landmarker, resolve_model_dir
from norface_rt.sources.factory import open_source
from norface_rt.sources.file import FileSource
from norface_rt.types import EndOfStream, FramePacket

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
    p = model_dir / TARGET_FILE
    if p.is_file():
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None and bgr.shape[:2] == (size, size):
            return np.ascontiguousarray(bgr[:, :, ::-1])
    # Older model sets carry no target.png: show a grey placeholder rather than failing.
    img = np.full((size, size, 3), 64, np.uint8)
    cv2.putText(img, "n/a", (size // 3, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200))
    return img


def normalize_media(input_uri: str, out_dir: str | os.PathLike[str], *,
                    model_dir: str | os.PathLike[str] | None = None,
                    landmarker: str | os.PathLike[str] | None = None, max_faces: int = 4,
                    backend: str = "onnxruntime", scale: int = 2) -> NormalizeReport:
    if not 1 <= scale <= 8:
        raise ValueError(f"scale must be in [1, 8], got {scale}")
    mdir = resolve_model_dir(model_dir)
    lm_path = resolve_landmarker(landmarker)
    be = load_backend(mdir, backend)
    cfg = be.config
    target = _target_image(mdir, cfg.img_size)
    src = open_source(input_uri)
    video = isinstance(src, FileSource)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = FaceStage(Landmarker(lm_path, max_faces=max_faces, mode="video" if video else "image",
                                 tiling=None if video else 1.0), Tracker(), Aligner(cfg))
    report = NormalizeReport()
    writer: Any = None
    try:
        src.start()
        while True:
            item = src.read(timeout=30.0)
            if item is None:
                raise TimeoutError(f"no frame from {input_uri} within 30 s")
            if isinstance(item, EndOfStream):
                report.error = item.error
                break
            ff = stage.process(item)
            report.frames += 1
            report.faces += len(ff.faces)
            normalized = (be.infer(ff.crops, want_normalized=True).normalized
                          if len(ff.faces) else None)
            if video:
                if writer is None:
                    writer = _VideoWriter(out / f"{src.stream_id}-normalized.mp4", cfg.img_size,
                                          scale, getattr(src, "info", None))
                    report.files.append(writer.path)
                writer.write(_video_panel(ff, normalized, target, scale, cfg.img_size), item)
            else:
                for i, face in enumerate(ff.faces):
                    assert normalized is not None
                    p = out / f"{src.stream_id}-{item.frame_index:05d}-face{face.track_id}.png"
                    panel = _panel(ff.crops[i], normalized[i], target, scale)
                    cv2.imwrite(str(p), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
                    report.files.append(p)
    finally:
        src.stop()
        stage.close()
        if writer is not None:
            writer.close()
    return report


def _video_panel(ff: Any, normalized: np.ndarray | None, target: np.ndarray, scale: int,
                 size: int) -> np.ndarray:
    if not ff.faces or normalized is None:
        blank = np.zeros((size, size, 3), np.uint8)
        cv2.putText(blank, "no face", (size // 5, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (200, 200, 200), 1, cv2.LINE_AA)
        return _panel(blank, blank, target, scale)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in ff.faces]
    i = int(np.argmax(areas))
    return _panel(ff.crops[i], normalized[i], target, scale)


class _VideoWriter:
    """H.264 (libx264, else MPEG-4) mp4 at the source's frame rate, one panel per frame."""

    def __init__(self, path: Path, size: int, scale: int, info: Any) -> None:
        from fractions import Fraction

        import av

        self.path = path
        self._av = av
        fps = getattr(info, "fps", None) or 25.0
        self._container = av.open(str(path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self._stream.width = 3 * size * scale
        self._stream.height = size * scale
        self._stream.pix_fmt = "yuv420p"
        self._n = 0

    def write(self, panel: np.ndarray, frame: FramePacket) -> None:
        del frame  # one panel per decoded frame, in order: frame indices map to pts
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(panel), format="rgb24")
        vf.pts = self._n  # in 1/fps units: the stream's time base
        self._n += 1
        for pkt in self._stream.encode(vf):
            self._container.mux(pkt)

    def close(self) -> None:
        for pkt in self._stream.encode(None):
            self._container.mux(pkt)
        self._container.close()
