"""BP4D-Spontaneous and BP4D+ in their released layouts.

BP4D (Zhang et al. 2014), as distributed by Binghamton:
  <root>/AUCoding/<S>_<T>.csv            (some copies: AUCoding/AU_OCC/<S>_<T>.csv)
      header row; first column = frame number, other columns named by AU number ("1","2",...);
      cells 0 = absent, 1 = present, 9 = not coded.
  <root>/AU-Intensity-Codes3.0/AU<nn>/<S>_<T>_AU<nn>.csv   (nn in 06 10 12 14 17)
      no header; "frame,intensity", intensity 0..5 (0 = absent), 9 = not coded.
  <root>/<frames>/<S>/<T>/<frame>.jpg    frames folder: "2D+3D", "Sequences" or "BP4D-training"
BP4D+ (MMSE, Zhang et al. 2016):
  <root>/AUCoding/AU_OCC/<S>_<T>.csv, <root>/AUCoding/AU_INT/AU<nn>/<S>_<T>_AU<nn>.csv,
  <root>/2D+3D/<S>/<T>/<frame>.jpg
S is a subject id (F001, M012), T a task (T1..T8 for BP4D, T1..T10 for BP4D+).
Only the 12 detection and 5 intensity AUs of the benchmark protocol are kept.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from train.data.protocols import BP4D_DETECTION_AUS, BP4D_INTENSITY_AUS
from train.data.records import Record, first_existing, index_frames
from train.data.sample import au_index, au_vector

BP4D_UNCODED = 9
_SEQ = re.compile(r"^([FM]\d{3})_(T\d+)$")

LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "BP4D": {"occurrence": ("AUCoding/AU_OCC", "AUCoding"),
             "intensity": ("AU-Intensity-Codes3.0", "AUCoding/AU_INT"),
             "frames": ("2D+3D", "Sequences", "BP4D-training")},
    "BP4D+": {"occurrence": ("AUCoding/AU_OCC",),
              "intensity": ("AUCoding/AU_INT",),
              "frames": ("2D+3D",)},
}


def _read_occurrence(path: Path, aus: Iterable[int]) -> dict[int, dict[int, float]]:
    """frame -> {au: 0/1} from one AU_OCC csv (9 and missing columns are left out)."""
    out: dict[int, dict[int, float]] = {}
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise ValueError(f"{path}: empty occurrence file (expected a header row)")
        cols: dict[int, int] = {}
        for i, h in enumerate(header[1:], start=1):
            h = h.strip().upper().removeprefix("AU")
            if h.isdigit() and int(h) in aus:
                cols[int(h)] = i
        for row in reader:
            if not row or not row[0].strip():
                continue
            try:
                frame = int(float(row[0]))
            except ValueError:
                raise ValueError(f"{path}: frame column must be an integer, got {row[0]!r}") from None
            labels: dict[int, float] = {}
            for au, i in cols.items():
                if i < len(row) and row[i].strip() != "":
                    v = int(float(row[i]))
                    if v in (0, 1):
                        labels[au] = float(v)
                    elif v != BP4D_UNCODED:
                        raise ValueError(f"{path}: AU{au} frame {frame}: expected 0, 1 or 9, got {v}")
            out[frame] = labels
    return out


def _read_intensity(path: Path) -> dict[int, float]:
    """frame -> intensity 0..5 from one headerless 'frame,intensity' file (9 dropped)."""
    out: dict[int, float] = {}
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[0].strip():
                continue
            try:
                frame, v = int(float(row[0])), int(float(row[1]))
            except ValueError:
                continue  # a header line in some copies
            if v == BP4D_UNCODED:
                continue
            if not 0 <= v <= 5:
                raise ValueError(f"{path}: frame {frame}: intensity must be 0..5 or 9, got {v}")
            out[frame] = float(v)
    return out


def load_bp4d(root: str | Path, variant: str = "BP4D", subjects: Iterable[str] | None = None,
              require_images: bool = True) -> list[Record]:
    """Parse BP4D or BP4D+ into records (one per coded frame that has an image).

    ``subjects`` restricts to those ids (a fold). Frames that are coded only for intensity are
    kept too, with NaN occurrence.
    """
    if variant not in LAYOUTS:
        raise ValueError(f"variant must be one of {sorted(LAYOUTS)}, got {variant!r}")
    root = Path(root)
    lay = LAYOUTS[variant]
    occ_dir = first_existing(root, lay["occurrence"], f"{variant} AU occurrence folder")
    try:
        int_dir: Path | None = first_existing(root, lay["intensity"], f"{variant} AU intensity folder")
    except FileNotFoundError:
        int_dir = None
    frames_dir = first_existing(root, lay["frames"], f"{variant} frames folder") if require_images else root
    wanted = set(subjects) if subjects is not None else None

    records: list[Record] = []
    seqs = sorted(p for p in occ_dir.glob("*.csv") if _SEQ.match(p.stem))
    if not seqs:
        raise FileNotFoundError(f"no <subject>_<task>.csv occurrence files in {occ_dir}")
    for csv_path in seqs:
        m = _SEQ.match(csv_path.stem)
        assert m is not None
        subject, task = m.group(1), m.group(2)
        if wanted is not None and subject not in wanted:
            continue
        occ = _read_occurrence(csv_path, BP4D_DETECTION_AUS)
        inten: dict[int, dict[int, float]] = {}
        if int_dir is not None:
            for au in BP4D_INTENSITY_AUS:
                f = int_dir / f"AU{au:02d}" / f"{subject}_{task}_AU{au:02d}.csv"
                if f.is_file():
                    for frame, v in _read_intensity(f).items():
                        inten.setdefault(frame, {})[au] = v
        images = index_frames(frames_dir / subject / task) if require_images else {}
        for frame in sorted(set(occ) | set(inten)):
            if require_images and frame not in images:
                continue
            o = occ.get(frame, {})
            i = inten.get(frame, {})
            if not o and not i:
                continue
            occ_vec = au_vector(o)
            int_vec = au_vector(i)
            records.append(Record(
                key=f"{variant}/{subject}/{task}/{frame:05d}",
                image_path=images.get(frame, frames_dir / subject / task / f"{frame:04d}.jpg"),
                subject=subject, source=variant, au_occurrence=occ_vec, au_intensity=int_vec))
    return records


def label_matrix(records: list[Record], field: str = "au_occurrence") -> np.ndarray:
    """(N, A) stacked labels, handy for statistics (positive rates, pos_weight)."""
    return np.stack([getattr(r, field) for r in records]) if records else np.zeros((0, len(au_vector())))


__all__ = ["load_bp4d", "label_matrix", "au_index"]
