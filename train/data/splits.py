"""Subject-independent cross-validation splits, stored as data files in train/data/splits/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPLIT_DIR = Path(__file__).resolve().parent / "splits"


@dataclass(frozen=True)
class Fold:
    name: str
    train_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]


@dataclass(frozen=True)
class SplitSet:
    dataset: str
    parts: tuple[tuple[str, ...], ...]
    folds: tuple[Fold, ...]
    source: str
    verification: str

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(s for p in self.parts for s in p)

    def fold(self, index: int) -> Fold:
        """Fold by 1-based index (fold1 tests on part 3, as in JAA-Net / ME-GraphAU)."""
        if not 1 <= index <= len(self.folds):
            raise ValueError(f"fold must be in 1..{len(self.folds)}, got {index}")
        return self.folds[index - 1]


def available() -> list[str]:
    return sorted(p.stem for p in SPLIT_DIR.glob("*.json"))


def load_split(name_or_path: str | Path) -> SplitSet:
    """Load a split by name ("bp4d_jaanet_3fold") or JSON path, checking it is subject-disjoint."""
    p = Path(name_or_path)
    if not p.suffix:
        p = SPLIT_DIR / f"{name_or_path}.json"
    if not p.is_file():
        raise FileNotFoundError(f"split file not found: {p} (available: {available()})")
    d: dict[str, Any] = json.loads(p.read_text())
    parts = tuple(tuple(str(s) for s in part) for part in d["parts"])
    seen: set[str] = set()
    for part in parts:
        dup = seen & set(part)
        if dup:
            raise ValueError(f"{p}: subjects {sorted(dup)} appear in more than one part")
        seen |= set(part)
    folds = []
    for f in d["folds"]:
        train = tuple(s for i in f["train_parts"] for s in parts[i - 1])
        test = parts[f["test_part"] - 1]
        folds.append(Fold(name=f["name"], train_subjects=train, test_subjects=test))
    return SplitSet(dataset=d["dataset"], parts=parts, folds=tuple(folds),
                    source=d.get("source", ""), verification=d.get("verification", ""))
