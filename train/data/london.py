"""The Face Research Lab London Set: 102 people photographed neutral and smiling (CC BY 4.0).

It is the only permissive real-face set with an expression label, so it serves three purposes
that must never share a person: skin textures and training labels (neutral vs happy, AU6/AU12)
come from two thirds of the people; the remaining third is held out from every use and is what the
model card reports real-face results on. The split is fixed by id (:func:`is_held_out`), so every
tool, config and session agrees on it without a list to keep in sync.

Layout (``<shared>/faces/london``): ``_info.csv`` (face_id, face_age, face_gender, face_eth),
``neutral/NNN_03.jpg`` with ``NNN_03.tem`` (FRL template) and ``smiling/NNN_08.jpg``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

LONDON_RELPATH = Path("faces") / "london"
HELD_OUT_EVERY = 3  # people whose numeric id is a multiple of 3 are held out (36 of the 102)
CITATION = ("DeBruine, L. & Jones, B. (2017). Face Research Lab London Set. figshare. "
            "doi:10.6084/m9.figshare.5047666.v5 (CC BY 4.0)")


@dataclass(frozen=True)
class LondonPerson:
    id: str  # "001".."102"
    age: int | None  # None where _info.csv says NA
    gender: str
    ethnicity: str
    neutral: Path
    neutral_tem: Path | None
    smiling: Path | None

    @property
    def subject(self) -> str:
        """Subject id used in shards and configs ("london/001")."""
        return f"london/{self.id}"

    @property
    def held_out(self) -> bool:
        return is_held_out(self.id)


def is_held_out(person_id: str) -> bool:
    """True for the fixed held-out third (ids 003, 006, ..., 102)."""
    try:
        n = int(str(person_id).split("/")[-1][:3])
    except ValueError:
        raise ValueError(f"person_id must start with a 3-digit London id, got {person_id!r}") from None
    return n % HELD_OUT_EVERY == 0


def _int_or_none(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isdigit() else None


def age_group(age: int | None) -> str:
    """Coarse age bands for per-group reporting."""
    if age is None:
        return "unknown"
    return "18-29" if age < 30 else ("30-44" if age < 45 else "45+")


def london_people(root: str | os.PathLike[str], split: str = "all") -> list[LondonPerson]:
    """People of the set under ``root`` (the shared data directory), sorted by id.

    ``split``: "all", "train" (the two thirds usable for textures, calibration and training) or
    "held_out".
    """
    if split not in ("all", "train", "held_out"):
        raise ValueError(f"split must be 'all', 'train' or 'held_out', got {split!r}")
    d = Path(root) / LONDON_RELPATH
    info = d / "_info.csv"
    if not info.is_file():
        raise FileNotFoundError(f"London set not found: {info} missing")
    people: list[LondonPerson] = []
    with info.open(newline="") as fh:
        for row in csv.DictReader(fh):
            pid = f"{int(row['face_id']):03d}"
            neutral = d / "neutral" / f"{pid}_03.jpg"
            if not neutral.is_file():
                continue
            tem = neutral.with_suffix(".tem")
            smiling = d / "smiling" / f"{pid}_08.jpg"
            people.append(LondonPerson(
                id=pid, age=_int_or_none(row["face_age"]), gender=row["face_gender"].strip(),
                ethnicity=row["face_eth"].strip(), neutral=neutral,
                neutral_tem=tem if tem.is_file() else None,
                smiling=smiling if smiling.is_file() else None))
    people.sort(key=lambda p: p.id)
    if split == "train":
        return [p for p in people if not p.held_out]
    if split == "held_out":
        return [p for p in people if p.held_out]
    return people
