"""RAF-DB basic (Li et al. 2017) in its released layout.

  <root>/basic/EmoLabel/list_patition_label.txt   (sic) lines "train_00001.jpg 5" / "test_0001.jpg 7"
      labels 1 Surprise 2 Fear 3 Disgust 4 Happiness 5 Sadness 6 Anger 7 Neutral
  <root>/basic/Image/aligned/train_00001_aligned.jpg     100x100, RAF's own alignment
  <root>/basic/Image/original/train_00001.jpg
  <root>/basic/Annotation/manual/train_00001_manu_attri.txt
      first 5 lines "x<TAB>y": two eye centres, nose tip, two mouth corners (original image),
      then gender, race, age lines
``root`` may be the folder holding ``basic`` or ``basic`` itself. With ``use="original"`` (the
default when the manual annotation exists) faces are re-aligned from the original photo with the
5 manual points onto the project's template, so crops match serving; ``use="aligned"`` takes
RAF's aligned crops (points are then found by the landmarker).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from norface_rt.config import EMOTION_NAMES
from train.data.records import Record

RAF_NAMES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}


def map_label(label: int) -> int:
    if label not in RAF_NAMES:
        raise ValueError(f"RAF-DB basic label must be 1..7, got {label}")
    return EMOTION_NAMES.index(RAF_NAMES[label])


def read_manual_points(path: Path) -> np.ndarray:
    """The 5 manual points reordered to the template order (image-left eye first, ...)."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 5 or any(len(p) < 2 for p in lines[:5]):
        raise ValueError(f"{path}: expected 5 lines 'x y' of landmarks first")
    pts = np.asarray([[float(p[0]), float(p[1])] for p in lines[:5]], dtype=np.float32)
    eyes = pts[:2][np.argsort(pts[:2, 0])]
    mouth = pts[3:5][np.argsort(pts[3:5, 0])]
    return np.concatenate([eyes, pts[2:3], mouth]).astype(np.float32)


def load_rafdb(root: str | Path, split: str = "train", use: str = "auto",
               require_images: bool = True) -> list[Record]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if use not in ("auto", "original", "aligned"):
        raise ValueError(f"use must be 'auto', 'original' or 'aligned', got {use!r}")
    root = Path(root)
    base = root / "basic" if (root / "basic").is_dir() else root
    label_file = base / "EmoLabel" / "list_patition_label.txt"
    if not label_file.is_file():
        raise FileNotFoundError(f"RAF-DB label list not found: {label_file}")
    records: list[Record] = []
    for lineno, line in enumerate(label_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{label_file}:{lineno}: expected '<name>.jpg <label>', got {line!r}")
        name, label = parts[0], int(parts[1])
        if not name.startswith(split + "_"):
            continue
        stem = Path(name).stem
        manual = base / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
        mode = use
        if mode == "auto":
            mode = "original" if manual.is_file() else "aligned"
        if mode == "original":
            path = base / "Image" / "original" / name
            points = read_manual_points(manual)
        else:
            path = base / "Image" / "aligned" / f"{stem}_aligned.jpg"
            points = None
        if require_images and not path.is_file():
            continue
        records.append(Record(key=f"RAF-DB/{stem}", image_path=path, subject=f"RAF-DB/{stem}",
                              source="RAF-DB", emotion=map_label(label), points5=points,
                              split=split))
    return records
