"""Records -> aligned samples, with the serving pipeline's own aligner and an on-disk crop cache.

Every dataset is cropped by :class:`norface_rt.faces.align.Aligner` with the model config's
template, so a network sees the same framing in training and in serving. Alignment points come
from the record (5 points or iBUG-68 landmarks shipped with the dataset) or, when the dataset has
none, from a pluggable detector (e.g. MediaPipe). Crops are cached as compressed .npz files keyed
by sample key, crop size and template, so a changed template never reuses stale crops.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from norface_rt.config import ModelConfig
from norface_rt.faces.align import Aligner, points5_from_ibug68, transform_points
from train.data.records import Record

PointsDetector = Callable[[np.ndarray], "np.ndarray | None"]


class AlignmentError(RuntimeError):
    """A record could not be aligned (unreadable image, or no face found by the detector)."""


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AlignmentError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CropCache:
    """Directory of aligned crops: <dir>/<hash[:2]>/<hash>.npz holding 'crop' and 'matrix'."""

    def __init__(self, directory: str | Path, cfg: ModelConfig) -> None:
        self.dir = Path(directory)
        self._salt = json.dumps({"size": cfg.img_size, "template": cfg.template}, sort_keys=True)

    def path(self, key: str) -> Path:
        h = hashlib.sha1((self._salt + "|" + key).encode()).hexdigest()
        return self.dir / h[:2] / f"{h}.npz"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        p = self.path(key)
        if not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            return z["crop"], z["matrix"]

    def put(self, key: str, crop: np.ndarray, matrix: np.ndarray) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, crop=crop, matrix=matrix)
        os.replace(tmp, p)  # atomic: parallel loaders never read half a file


class AlignedDataset(Dataset[dict[str, Any]]):
    """Map-style dataset of common-format samples built from :class:`Record` lists."""

    def __init__(self, records: Sequence[Record], cfg: ModelConfig, cache_dir: str | Path | None = None,
                 detector: PointsDetector | None = None) -> None:
        self.records = list(records)
        self.cfg = cfg
        self.aligner = Aligner(cfg)
        self.cache = CropCache(cache_dir, cfg) if cache_dir is not None else None
        self.detector = detector

    def __len__(self) -> int:
        return len(self.records)

    def points_for(self, rec: Record, image: np.ndarray | None) -> np.ndarray:
        if rec.points5 is not None:
            return np.asarray(rec.points5, dtype=np.float32)
        if rec.landmarks68 is not None:
            return points5_from_ibug68(rec.landmarks68)
        if self.detector is None:
            raise AlignmentError(f"{rec.key}: the dataset gives no landmarks and no detector was configured")
        if image is None:
            image = read_rgb(rec.image_path)
        pts = self.detector(image)
        if pts is None:
            raise AlignmentError(f"{rec.key}: no face found in {rec.image_path}")
        return np.asarray(pts, dtype=np.float32)

    def crop(self, rec: Record) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            hit = self.cache.get(rec.key)
            if hit is not None:
                return hit
        image = read_rgb(rec.image_path)
        crop, m = self.aligner.crop_for_points(image, self.points_for(rec, image))
        if self.cache is not None:
            self.cache.put(rec.key, crop, m)
        return crop, m

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        crop, m = self.crop(rec)
        sample: dict[str, Any] = {
            "image": crop,
            "au_occurrence": rec.au_occurrence.astype(np.float32),
            "au_intensity": rec.au_intensity.astype(np.float32),
            "emotion": np.int64(rec.emotion),
            "subject": rec.subject, "source": rec.source, "key": rec.key,
        }
        if rec.landmarks68 is not None:
            sample["landmarks"] = transform_points(m, rec.landmarks68).astype(np.float32)
        return sample

    def prepare(self, progress: bool = False) -> list[tuple[str, str]]:
        """Align (and cache) every record now; drop the ones that fail and return (key, reason)."""
        from tqdm import tqdm

        kept: list[Record] = []
        failed: list[tuple[str, str]] = []
        for rec in tqdm(self.records, disable=not progress, desc="align", unit="img"):
            try:
                self.crop(rec)
                kept.append(rec)
            except (AlignmentError, ValueError) as e:
                failed.append((rec.key, str(e)))
        self.records = kept
        return failed
