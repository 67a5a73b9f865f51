"""Teachers' soft labels in training: joined by sample key, the critic's filter, and a short
distillation run whose teacher loss falls (the student learns what the teacher says)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import TINY_MODEL, make_shards, run_section

from norface_rt.config import EMOTION_NAMES
from train import classifier
from train.common import model_config, read_log
from train.data.build import build_dataset
from train.data.sample import collate
from train.data.teacher_labels import critic_keep, read_teacher_table
from train.losses import soft_emotion_ce

E = len(EMOTION_NAMES)
TINY_MODEL_CFG = model_config(TINY_MODEL)


def teacher_table(path: Path, keys: list[str], rows: np.ndarray,
                  no_mass: dict[str, list[str]] | None = None) -> Path:
    """A table as the harness writes it (train/teachers/harness.py, LabelTable.save); ``no_mass``:
    teacher name -> the emotions it has no class for (its record's ``no_mass``)."""
    extra = ({"teachers": np.asarray(json.dumps({n: {"name": n, "no_mass": m}
                                                 for n, m in no_mass.items()}))}
             if no_mass is not None else {})
    np.savez_compressed(path, sample_key=np.asarray(keys), ensemble=rows.astype(np.float32),
                        emotion_names=np.asarray(EMOTION_NAMES),
                        ref=np.asarray([f"shard#{i}" for i in range(len(keys))]), **extra)
    return path


def one_hot(idx: list[int]) -> np.ndarray:
    out = np.zeros((len(idx), E), np.float32)
    out[np.arange(len(idx)), idx] = 1.0
    return out


def test_table_joins_by_key_and_the_critic_drops_unreadable_expressions(tmp_path: Path) -> None:
    data = make_shards(tmp_path / "sh", n=16, size=32)  # emotion 1 (happy) where expr > 0.5
    keys = [f"syn/{i:05d}" for i in range(16)]
    rows = one_hot([0] * 16)  # the teachers read every face as neutral...
    rows[12:] = one_hot([1] * 4)  # ...but the last four as happy
    rows[3] = np.nan  # and found no face in one
    table = teacher_table(tmp_path / "t.npz", keys[:15], rows[:15])  # and never saw the last
    read = read_teacher_table(table)
    assert len(read) == 14 and keys[3] not in read and keys[15] not in read
    spec = {"kind": "shards", "path": str(data), "teachers": str(table)}
    ds = build_dataset(spec, TINY_MODEL_CFG)
    batch = collate([ds[i] for i in range(16)])
    assert batch["has_teacher_emotion"].tolist() == [i not in (3, 15) for i in range(16)]
    np.testing.assert_allclose(batch["teacher_emotion"][12].numpy(), one_hot([1])[0])
    # critic: happy-labelled samples read as neutral go, the ones read as happy stay
    emotions = np.asarray([int(ds[i]["emotion"]) for i in range(16)])
    keep = critic_keep(emotions, np.asarray(keys), read, 0.6)
    happy = emotions == 1
    assert happy.sum() == 8 and (~keep).sum() == int((happy & (np.arange(16) < 12)).sum())
    assert keep[~happy].all() and keep[12:].all()
    filtered = build_dataset({**spec, "critic_neutral": 0.6}, TINY_MODEL_CFG)
    assert len(filtered) == int(keep.sum())
    with pytest.raises(ValueError, match="needs teachers"):
        build_dataset({"kind": "shards", "path": str(data), "critic_neutral": 0.5}, TINY_MODEL_CFG)
    with pytest.raises(ValueError, match="critic_neutral"):
        critic_keep(emotions, np.asarray(keys), read, 0.0)
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, sample_key=np.asarray(keys), ensemble=np.zeros((16, 7)),
                        emotion_names=np.asarray(EMOTION_NAMES[:7]))
    with pytest.raises(ValueError, match="emotion order"):
        read_teacher_table(bad)


def test_soft_cross_entropy_is_the_hard_one_for_one_hot_targets() -> None:
    logits = torch.randn(5, E)
    target = torch.from_numpy(one_hot([0, 1, 2, 3, 4]))
    rows = torch.tensor([True, True, False, True, True])
    hard = torch.nn.functional.cross_entropy(logits[rows], torch.tensor([0, 1, 3, 4]))
    torch.testing.assert_close(soft_emotion_ce(logits, target, rows), hard)
    assert float(soft_emotion_ce(logits, target, torch.zeros(5, dtype=torch.bool))) == 0.0


def test_an_emotion_no_teacher_has_is_no_opinion(tmp_path: Path) -> None:
    """Contempt, which FER2013-style teachers lack: NaN in the rows (not 0), the critic keeps
    contempt-labelled faces the teachers call neutral, and distillation leaves its logit alone."""
    keys = ["a", "b", "c"]
    rows = one_hot([0, 0, 1])
    table = teacher_table(tmp_path / "t.npz", keys, rows,
                          no_mass={"fer": ["contempt"], "faceapi": ["contempt", "fear"]})
    read = read_teacher_table(table)
    c, f = EMOTION_NAMES.index("contempt"), EMOTION_NAMES.index("fear")
    assert np.isnan(read["a"][c]) and np.isfinite(read["a"][f])  # fear: fer has it
    happy = EMOTION_NAMES.index("happy")
    keep = critic_keep(np.asarray([c, happy, happy]), np.asarray(keys), read, 0.6)
    assert keep.tolist() == [True, False, True]
    target = torch.from_numpy(np.stack([read[k] for k in keys]))
    logits = torch.zeros(3, E, requires_grad=True)
    loss = soft_emotion_ce(logits, target, torch.ones(3, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad[:, c].abs().max()) == 0.0  # the teachers neither lower nor raise it
    # the same as a 7-way cross-entropy over the classes the teachers have
    ref = torch.nn.functional.cross_entropy(torch.zeros(3, E - 1), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(loss.detach(), ref)


def test_distillation_teaches_what_the_teacher_says(tmp_path: Path) -> None:
    data = make_shards(tmp_path / "sh", n=16, size=32)
    keys = [f"syn/{i:05d}" for i in range(16)]
    # a teacher that calls the smiling faces surprised: only distillation can teach that
    emotions = [1 if (i // 4) % 4 / 3.0 > 0.5 else 0 for i in range(16)]
    table = teacher_table(tmp_path / "t.npz", keys, one_hot([3 if e == 1 else 0 for e in emotions]))
    spec = {"kind": "shards", "path": str(data), "teachers": str(table)}
    cfg: dict[str, Any] = {
        "model": TINY_MODEL, "data": spec,
        "classifier": {"task": "multi", "teacher_weight": 1.0}, "optim": {"lr": 2e-3},
        "run": run_section(tmp_path / "run", 40, log_every=10)}
    out = classifier.run(cfg)
    log = read_log(out / "log.csv")
    assert "teacher" in log[0] and log[-1]["teacher"] < 0.7 * log[0]["teacher"]
    with pytest.raises(ValueError, match="teacher_weight"):
        classifier.ClassifierTrainer({**cfg, "classifier": {"teacher_weight": -1}})
