"""AffectNet (Mollahosseini et al. 2017), manually annotated part, in its released layout.

  <root>/Manually_Annotated_file_lists/training.csv, validation.csv
      header: subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
              expression,valence,arousal
      facial_landmarks: 68 points as "x0;y0;x1;y1;..." in image pixels (iBUG-68 order)
      expression: 0 Neutral 1 Happy 2 Sad 3 Surprise 4 Fear 5 Disgust 6 Anger 7 Contempt
                  8 None 9 Uncertain 10 Non-Face
  <root>/Manually_Annotated_Images/<subDirectory_filePath>
The validation list is the benchmark's test set. Classes 0..7 coincide with EMOTION_NAMES, so the
mapping is the identity; the 7-class protocol drops contempt (label -1), None/Uncertain are -1 and
Non-Face rows are skipped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from norface_rt.config import EMOTION_NAMES
from train.data.records import Record
from train.data.sample import UNKNOWN_EMOTION

AFFECTNET_NAMES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_NONFACE = 10
SPLIT_FILES = {"train": "training.csv", "val": "validation.csv"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")


def map_expression(code: int, num_classes: int = 8) -> int:
    """AffectNet expression code -> EMOTION_NAMES index (-1 where not one of the classes)."""
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    if 0 <= code < num_classes:
        return EMOTION_NAMES.index(AFFECTNET_NAMES[code])
    return UNKNOWN_EMOTION


def parse_landmarks(text: str) -> np.ndarray | None:
    vals = [v for v in text.replace(",", ";").split(";") if v.strip()]
    if not vals:
        return None
    if len(vals) != 136:
        raise ValueError(f"facial_landmarks must have 136 numbers (68 x,y), got {len(vals)}")
    return np.asarray([float(v) for v in vals], dtype=np.float32).reshape(68, 2)


def load_affectnet(root: str | Path, split: str = "train", num_classes: int = 8,
                   require_images: bool = True, drop_unknown: bool = True) -> list[Record]:
    """Records of one official list; ``drop_unknown`` removes None/Uncertain (and contempt for 7)."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    root = Path(root)
    csv_path = root / "Manually_Annotated_file_lists" / SPLIT_FILES[split]
    if not csv_path.is_file():
        raise FileNotFoundError(f"AffectNet list not found: {csv_path}")
    img_root = root / "Manually_Annotated_Images"
    records: list[Record] = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("subDirectory_filePath", "expression") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: missing columns {missing}; expected header {COLUMNS}")
        for lineno, row in enumerate(reader, start=2):
            code = int(float(row["expression"]))
            if code == AFFECTNET_NONFACE:
                continue
            emotion = map_expression(code, num_classes)
            if drop_unknown and emotion == UNKNOWN_EMOTION:
                continue
            rel = row["subDirectory_filePath"].strip()
            path = img_root / rel
            if require_images and not path.is_file():
                continue
            try:
                lm = parse_landmarks(row.get("facial_landmarks") or "")
            except ValueError as e:
                raise ValueError(f"{csv_path}:{lineno}: {e}") from None
            box = None
            if row.get("face_x") not in (None, ""):
                x, y = float(row["face_x"]), float(row["face_y"])
                w, h = float(row["face_width"]), float(row["face_height"])
                box = (x, y, x + w, y + h)
            records.append(Record(key=f"AffectNet/{rel}", image_path=path, subject=f"AffectNet/{rel}",
                                  source="AffectNet", emotion=emotion, landmarks68=lm, box=box,
                                  split=split))
    return records
