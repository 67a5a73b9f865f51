"""Build a training / test dataset from a config "data" spec (one dict per dataset).

  {"kind": "shards", "path": DIR, "resize": false, "include_subjects": [...], "exclude_subjects": [...],
   "require_geometry": false, "repeat": 1, "teachers": FILE, "critic_neutral": P}
     (subject ids match exactly, or as a prefix when they end with "/", e.g. "composite/";
     require_geometry drops samples whose mp_blendshapes MediaPipe could not read; repeat lists
     the dataset that many times, to oversample a small set inside a concatenation; teachers
     joins the teachers' soft labels of train/data/teacher_labels.py, and critic_neutral drops
     expression samples the teachers read as neutral with more than P)
  {"kind": "bp4d" | "bp4d+" | "disfa", "root": DIR, "split_file": "bp4d_jaanet_3fold", "fold": 1,
   "subset": "train" | "test", "cache_dir": DIR, "frames_root": DIR (DISFA), "landmarker": FILE}
  {"kind": "affectnet", "root": DIR, "split": "train" | "val", "num_classes": 7 | 8, ...}
  {"kind": "rafdb", "root": DIR, "split": "train" | "test", ...}
  {"kind": "folder", "root": DIR, "labels": "labels.csv", ...}
A list of specs is concatenated (e.g. BP4D + synthetic shards).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from norface_rt.config import ModelConfig
from norface_rt.types import FramePacket
from train.data import load_records
from train.data.crops import AlignedDataset
from train.data.shards import ShardDataset
from train.data.splits import load_split

_COMMON = {"kind", "cache_dir", "landmarker", "split_file", "fold", "subset", "limit", "prepare"}


class MediaPipePoints:
    """Five alignment points of the most prominent face, from the serving pipeline's own
    :class:`norface_rt.faces.landmarker.Landmarker` in image mode, so dataset crops match live
    crops exactly. Used for datasets that ship no landmarks (BP4D and DISFA frames).
    """

    def __init__(self, landmarker: str | Path) -> None:
        from norface_rt.faces.landmarker import Landmarker

        self._lm = Landmarker(landmarker, max_faces=1, mode="image")
        # closes the MediaPipe graph at interpreter exit too (before its C bindings go away)
        self._finalizer = weakref.finalize(self, self._lm.close)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        frame = FramePacket(stream_id="train", frame_index=0, image=np.ascontiguousarray(image),
                            pts=None, capture_time=0.0)
        faces = self._lm.detect(frame)
        return np.asarray(faces[0].points5, dtype=np.float32) if faces else None

    def close(self) -> None:
        self._finalizer()


def mediapipe_detector(landmarker: str | Path) -> MediaPipePoints:
    return MediaPipePoints(landmarker)


def _matches(subjects: np.ndarray, patterns: Sequence[str]) -> np.ndarray:
    """Held-out identities: exact subject ids, or prefixes when a pattern ends with "/"."""
    out = np.zeros(len(subjects), bool)
    for pat in patterns:
        out |= (np.char.startswith(subjects, pat) if pat.endswith("/") else subjects == pat)
    return out


def build_one(spec: Mapping[str, Any], cfg: ModelConfig) -> Dataset[Any]:
    spec = dict(spec)
    kind = str(spec.get("kind", "")).lower()
    if kind == "shards":
        ds = ShardDataset(spec["path"], img_size=cfg.img_size, resize=bool(spec.get("resize", False)))
        include, exclude = spec.get("include_subjects"), spec.get("exclude_subjects")
        require_geometry = bool(spec.get("require_geometry", False))
        repeat = int(spec.get("repeat", 1))
        if repeat < 1:
            raise ValueError(f"data spec repeat must be >= 1, got {repeat}")
        out: Dataset[Any] = ds
        table = None
        critic = spec.get("critic_neutral")
        if spec.get("teachers"):
            from train.data.teacher_labels import TeacherLabelled, read_teacher_table

            table = read_teacher_table(spec["teachers"])
            out = TeacherLabelled(ds, ds.column("key"), table)
        elif critic is not None:
            raise ValueError("data spec critic_neutral needs teachers (a teacher label table)")
        if include or exclude or require_geometry or critic is not None:
            subjects = ds.subjects()
            keep = np.ones(len(subjects), bool)
            if include:
                keep &= _matches(subjects, include)
            if exclude:
                keep &= ~_matches(subjects, exclude)
            if require_geometry:
                keep &= np.isfinite(ds.column("mp_blendshapes")).all(axis=1)
                if ds.has_column("mp_neutral"):
                    keep &= np.isfinite(ds.column("mp_neutral")).all(axis=1)
            if critic is not None and table is not None:
                from train.data.teacher_labels import critic_keep

                keep &= critic_keep(ds.column("emotion"), ds.column("key"), table, float(critic))
            if not keep.any():
                raise ValueError(f"data spec {dict(spec)}: no sample left after filtering "
                                 f"(subjects present: {sorted(set(subjects))[:10]}...)")
            out = Subset(out, np.flatnonzero(keep).tolist())
        return out if repeat == 1 else ConcatDataset([out] * repeat)
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
    aligned = AlignedDataset(records, cfg, cache_dir=spec.get("cache_dir"), detector=detector)
    if spec.get("prepare", detector is not None):
        aligned.prepare(progress=True)
    return aligned


def build_dataset(specs: Mapping[str, Any] | Sequence[Mapping[str, Any]], cfg: ModelConfig) -> Dataset[Any]:
    if isinstance(specs, Mapping):
        return build_one(specs, cfg)
    parts = [build_one(s, cfg) for s in specs]
    if not parts:
        raise ValueError("empty data spec list")
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
