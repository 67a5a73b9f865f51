"""MAE stage on a tiny model and tiny real shards: loss falls, resume is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.common import read_log

from train_helpers import TINY_MODEL, make_shards, resume_matches, run_section

from train import mae

@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "sh", n=16, size=32)


# ------------------------------------------------------------------------------------------- MAE

def test_mae_overfits_tiny_set(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "optim": {"lr": 2e-3},
           "run": run_section(tmp_path, 150, log_every=10)}
    out = mae.run(cfg)
    losses = [r["loss"] for r in read_log(out / "log.csv")]
    # masked-patch MSE on per-patch-normalised pixels starts near 1; memorising 16 faces halves it
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    assert (out / "encoder.safetensors").is_file()


def test_mae_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}}
    resume_matches(mae.run, cfg, tmp_path, ["mae.safetensors"])


