"""Teachers' soft labels joined onto a shard dataset, and the teachers as critics of its labels.

The teacher harness (``python -m train teachers label --input SHARDS --out TABLE.npz``) writes one
row per sample: the sample's own ``key`` and the teachers' ensemble probabilities over our
emotions (NaN where no face was found). A data spec names that table (``"teachers": FILE``) and
every sample with a row gets ``teacher_emotion`` (8,) float32, which the classifier distils
(``classifier.teacher_weight``).

``"critic_neutral": P`` drops samples labelled with an expression (an emotion other than neutral)
that the teachers read as neutral with probability above P: a render or re-enactment too weak to
show what its label says would teach the model to call resting faces emotional.

An emotion that no teacher has a class for (contempt, for FER2013-style teachers) is read back as
NaN, "no opinion", not as probability 0: distillation then leaves that emotion's logit out of the
student's softmax, and the critic keeps samples labelled with it, since a teacher that cannot say
contempt would otherwise teach the student never to say it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from norface_rt.config import EMOTION_NAMES

TEACHER_KEY = "teacher_emotion"


def no_opinion_emotions(teachers: dict[str, dict[str, object]]) -> tuple[str, ...]:
    """Emotions every teacher of the table gives no mass (the ensemble cannot say them): from a
    record's ``no_mass``, else the emotions missing from its ``to_ours`` class map."""
    sets: list[set[str]] = []
    for rec in teachers.values():
        if "no_mass" in rec:
            sets.append({str(e) for e in rec["no_mass"]})  # type: ignore[attr-defined]
        elif "to_ours" in rec:
            sets.append(set(EMOTION_NAMES) - {str(e) for e in rec["to_ours"]})  # type: ignore[attr-defined]
        else:
            sets.append(set())
    common = set.intersection(*sets) if sets else set()
    return tuple(e for e in EMOTION_NAMES if e in common)


def read_teacher_table(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """sample key -> ensemble row (8,) float32, for rows with a face; emotions no teacher has
    are NaN in every row."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"teacher label table not found: {p} (python -m train teachers "
                                "label --input SHARDS --out FILE)")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in ("sample_key", "ensemble", "emotion_names") if k not in z.files]
        if missing:
            raise ValueError(f"{p}: not a teacher label table (missing {missing})")
        names = tuple(str(n) for n in z["emotion_names"])
        if names != EMOTION_NAMES:
            raise ValueError(f"{p}: emotion order {names} differs from {EMOTION_NAMES}")
        keys = [str(k) for k in z["sample_key"]]
        ens = np.array(z["ensemble"], np.float32)
        teachers = json.loads(str(z["teachers"])) if "teachers" in z.files else {}
    if ens.shape != (len(keys), len(EMOTION_NAMES)):
        raise ValueError(f"{p}: ensemble must be ({len(keys)}, {len(EMOTION_NAMES)}), got {ens.shape}")
    if any(not k for k in keys):
        raise ValueError(f"{p}: rows without a sample key (label shards, not image folders)")
    face = np.isfinite(ens).sum(axis=1) > 0
    for e in no_opinion_emotions(teachers):
        ens[:, EMOTION_NAMES.index(e)] = np.nan
    return {k: ens[i] for i, k in enumerate(keys) if face[i]}


class TeacherLabelled(Dataset[dict[str, Any]]):
    """``base`` with ``teacher_emotion`` added to the samples the table labels."""

    def __init__(self, base: Dataset[dict[str, Any]], keys: np.ndarray,
                 table: dict[str, np.ndarray]) -> None:
        self.base = base
        self.rows: list[np.ndarray | None] = [table.get(str(k)) for k in keys]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.base[i]
        row = self.rows[i]
        if row is not None:
            s = {**s, TEACHER_KEY: row}
        return s

    @property
    def labelled(self) -> int:
        return sum(r is not None for r in self.rows)


def critic_keep(emotions: np.ndarray, keys: np.ndarray, table: dict[str, np.ndarray],
                max_neutral: float) -> np.ndarray:
    """Mask of samples the critic keeps: everything except samples labelled with an expression
    whose teacher ensemble gives neutral more than ``max_neutral`` (samples without a teacher
    row, and samples labelled with an emotion the teachers have no opinion on, are kept)."""
    if not 0.0 < max_neutral <= 1.0:
        raise ValueError(f"critic_neutral must be in (0, 1], got {max_neutral}")
    neutral = EMOTION_NAMES.index("neutral")
    keep = np.ones(len(keys), bool)
    for i, (e, k) in enumerate(zip(emotions, keys)):
        row = table.get(str(k))
        if (row is not None and int(e) >= 0 and int(e) != neutral and np.isfinite(row[int(e)])
                and row[neutral] > max_neutral):
            keep[i] = False
    return keep
