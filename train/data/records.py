"""Dataset-independent description of one labelled face before alignment.

Adapters only parse their dataset's official layout into :class:`Record` lists; alignment,
caching and tensor conversion are shared (:mod:`train.data.crops`), so every dataset is aligned
the same way as the serving pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.data.sample import UNKNOWN_EMOTION, au_vector


@dataclass
class Record:
    key: str  # unique id, e.g. "BP4D/F001/T1/0042"
    image_path: Path
    subject: str
    source: str
    au_occurrence: np.ndarray = field(default_factory=au_vector)
    au_intensity: np.ndarray = field(default_factory=au_vector)
    emotion: int = UNKNOWN_EMOTION
    landmarks68: np.ndarray | None = None  # (68, 2) in source-image pixels
    points5: np.ndarray | None = None  # (5, 2) in source-image pixels, template order
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in source pixels
    split: str = ""  # official split where the dataset has one ("train" / "test" / "val")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def index_frames(folder: Path) -> dict[int, Path]:
    """Map frame number -> image file for a folder of frames named by number with any padding.

    BP4D names frames 0001.jpg, extracted DISFA frames may be 1.jpg or 00001.png; indexing by the
    integer in the stem makes the lookup independent of that.
    """
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_SUFFIXES:
            m = re.search(r"(\d+)$", p.stem)
            if m:
                out[int(m.group(1))] = p
    return out


def first_existing(root: Path, candidates: tuple[str, ...], what: str) -> Path:
    """The first of ``root/c`` that is a directory, else a FileNotFoundError listing them all."""
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    looked = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{what} not found; looked for: {looked}")
