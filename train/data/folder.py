"""Generic adapter: a folder of images plus one CSV of labels, for data in no official layout.

  <root>/<labels.csv> with a header row:
    path        image path relative to root (required)
    subject     subject id (optional; default: the path, i.e. every image its own subject)
    emotion     a name from EMOTION_NAMES (or alias like "happiness") or an index; empty = unknown
    AU01..AU43  occurrence 0/1, empty = unknown          (any AU of AU_NAMES)
    AU01_intensity..  intensity 0..5, empty = unknown
    points5     optional "x;y;..." 10 numbers in image pixels, template order
    landmarks68 optional "x;y;..." 136 numbers (iBUG-68)
Unknown columns are rejected so a typo ("AU1_int") does not silently drop labels.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train.data.records import Record
from train.data.sample import UNKNOWN_EMOTION, au_vector, emotion_from_name

KNOWN = {"path", "subject", "emotion", "points5", "landmarks68", "split"}


def _numbers(text: str, n: int, what: str) -> np.ndarray | None:
    vals = [v for v in text.replace(",", ";").split(";") if v.strip()]
    if not vals:
        return None
    if len(vals) != 2 * n:
        raise ValueError(f"{what} must have {2 * n} numbers, got {len(vals)}")
    return np.asarray([float(v) for v in vals], dtype=np.float32).reshape(n, 2)


def load_folder(root: str | Path, labels: str = "labels.csv", source: str = "folder",
                require_images: bool = True, subjects: Iterable[str] | None = None) -> list[Record]:
    """Parse the label CSV; ``subjects`` keeps only those subject ids (a cross-validation fold)."""
    root = Path(root)
    wanted = set(subjects) if subjects is not None else None
    csv_path = root / labels
    if not csv_path.is_file():
        raise FileNotFoundError(f"label CSV not found: {csv_path}")
    records: list[Record] = []
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = list(reader.fieldnames or [])
        if "path" not in cols:
            raise ValueError(f"{csv_path}: a 'path' column is required, got columns {cols}")
        au_cols = {c for c in cols if c in AU_NAMES}
        int_cols = {c for c in cols if c.endswith("_intensity") and c[: -len("_intensity")] in AU_NAMES}
        unknown = set(cols) - KNOWN - au_cols - int_cols
        if unknown:
            raise ValueError(f"{csv_path}: unknown columns {sorted(unknown)}; allowed: {sorted(KNOWN)}, "
                             f"AU names {AU_NAMES} and '<AU>_intensity'")
        for lineno, row in enumerate(reader, start=2):
            rel = row["path"].strip()
            path = root / rel
            if require_images and not path.is_file():
                raise FileNotFoundError(f"{csv_path}:{lineno}: image not found: {path}")
            where = f"{csv_path}:{lineno}"
            occ = {c: float(row[c]) for c in au_cols if row[c].strip() != ""}
            bad = {c: v for c, v in occ.items() if v not in (0.0, 1.0)}
            if bad:
                raise ValueError(f"{where}: occurrence must be 0 or 1, got {bad}")
            inten = {c[:-len("_intensity")]: float(row[c]) for c in int_cols if row[c].strip() != ""}
            bad = {c: v for c, v in inten.items() if not 0.0 <= v <= 5.0}
            if bad:
                raise ValueError(f"{where}: intensity must lie in [0, 5], got {bad}")
            emo_text = (row.get("emotion") or "").strip()
            if emo_text.lstrip("-").isdigit():
                emotion = int(emo_text)
                if not (emotion == UNKNOWN_EMOTION or 0 <= emotion < len(EMOTION_NAMES)):
                    raise ValueError(f"{where}: emotion index must be -1..{len(EMOTION_NAMES) - 1}, "
                                     f"got {emotion}")
            else:
                try:
                    emotion = emotion_from_name(emo_text)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
            try:
                p5 = _numbers(row.get("points5") or "", 5, "points5")
                lm = _numbers(row.get("landmarks68") or "", 68, "landmarks68")
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            subject = (row.get("subject") or "").strip() or f"{source}/{rel}"
            if wanted is not None and subject not in wanted:
                continue
            records.append(Record(
                key=f"{source}/{rel}", image_path=path, subject=subject, source=source,
                au_occurrence=au_vector(occ), au_intensity=au_vector(inten), emotion=emotion,
                points5=p5, landmarks68=lm, split=(row.get("split") or "").strip()))
    return records
