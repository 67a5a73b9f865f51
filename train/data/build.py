"""Build a training / test dataset from a config "data" spec (one dict per dataset).

  {"kind": "shards", "path": DIR, "resize": false}
  {"kind": "bp4d" | "bp4d+" | "disfa", "root": DIR, "split_file": "bp4d_jaanet_3fold", "fold": 1,
   "subset": "train" | "test", "cache_dir": DIR, "frames_root": DIR (DISFA), "landmarker": FILE}
  {"kind": "affectnet", "root": DIR, "split": "train" | "val", "num_classes": 7 | 8, ...}
  {"kind": "rafdb", "root": DIR, "split": "train" | "test", ...}
  {"kind": "folder", "root": DIR, "labels": "labels.csv", ...}
A list of specs is concatenated (e.g. BP4D + synthetic shards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from norface_rt.config import ModelConfig
from train.data import load_records
from train.data.crops import AlignedDataset, PointsDetector
from train.data.shards import ShardDataset
from train.data.splits import load_split

_COMMON = {"kind", "cache_dir", "landmarker", "split_file", "fold", "subset", "limit", "prepare"}


def mediapipe_detector(landmarker: str) -> PointsDetector:
    """Five alignment points of the most confident face, via the MediaPipe Tasks FaceLandmarker.

    Used for datasets that ship no landmarks (BP4D frames, DISFA frames). Pixel conversion follows
    the serving convention (x * W - 0.5) so crops match the live pipeline.
    """
    import mediapipe as mp

    from norface_rt.faces.align import points5_from_mediapipe

    opts = mp.tasks.vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(landmarker)),
        running_mode=mp.tasks.vision.RunningMode.IMAGE, num_faces=1)
    lm = mp.tasks.vision.FaceLandmarker.create_from_options(opts)

    def detect(image: np.ndarray) -> np.ndarray | None:
        res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        if not res.face_landmarks:
            return None
        h, w = image.shape[:2]
        pts = np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in res.face_landmarks[0]], dtype=np.float32)
        return points5_from_mediapipe(pts)

    return detect


def build_one(spec: Mapping[str, Any], cfg: ModelConfig) -> Dataset[Any]:
    spec = dict(spec)
    kind = str(spec.get("kind", "")).lower()
    if kind == "shards":
        return ShardDataset(spec["path"], img_size=cfg.img_size, resize=bool(spec.get("resize", False)))
    if "root" not in spec:
        raise ValueError(f"data spec of kind {kind!r} needs 'root', got {sorted(spec)}")
    kwargs = {k: v for k, v in spec.items() if k not in _COMMON and k != "root"}
    if spec.get("split_file"):
        split = load_split(spec["split_file"])
        fold = split.fold(int(spec.get("fold", 1)))
        subset = spec.get("subset", "train")
        if subset not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        kwargs["subjects"] = fold.train_subjects if subset == "train" else fold.test_subjects
    records = load_records(kind, spec["root"], **kwargs)
    if spec.get("limit"):
        records = records[: int(spec["limit"])]
    if not records:
        raise ValueError(f"data spec {dict(spec)} produced no samples")
    detector = mediapipe_detector(spec["landmarker"]) if spec.get("landmarker") else None
    ds = AlignedDataset(records, cfg, cache_dir=spec.get("cache_dir"), detector=detector)
    if spec.get("prepare", detector is not None):
        ds.prepare(progress=True)
    return ds


def build_dataset(specs: Mapping[str, Any] | Sequence[Mapping[str, Any]], cfg: ModelConfig) -> Dataset[Any]:
    if isinstance(specs, Mapping):
        return build_one(specs, cfg)
    parts = [build_one(s, cfg) for s in specs]
    if not parts:
        raise ValueError("empty data spec list")
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
