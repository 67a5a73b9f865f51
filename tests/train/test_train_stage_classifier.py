"""Classifier stage: multi-task loss falls, metrics + routing reported, resume exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from train.common import read_log

from train_helpers import TINY_MODEL, make_shards, resume_matches, run_section

from train import classifier

@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "sh", n=16, size=32)


# ------------------------------------------------------------------------------------ classifier

def _cla_config(shards: Path, out: Path, steps: int, **kw: Any) -> dict[str, Any]:
    return {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
            "test_data": {"kind": "shards", "path": str(shards)},
            "classifier": {"task": "multi", **kw.pop("classifier", {})}, "optim": {"lr": 2e-3},
            "run": run_section(out, steps, **kw)}


def test_classifier_overfits_and_reports(tmp_path: Path) -> None:
    # one fixed batch of 8 faces; gate noise off so routing is stable while memorising (the noisy
    # path is exercised by the resume test). Multi-task loss must fall below 0.4x its start.
    data = make_shards(tmp_path / "sh8", n=8, subjects=2)
    cfg = _cla_config(data, tmp_path / "run", 100, log_every=10)
    cfg["model"] = {**TINY_MODEL, "moe_noise": False}
    cfg["run"]["batch_size"] = 8
    out = classifier.run(cfg)
    log = read_log(out / "log.csv")
    cla = [r["cla"] for r in log]
    assert np.mean(cla[-2:]) < 0.4 * cla[0], cla
    assert {"emotion", "au_occurrence", "au_intensity", "moe_importance", "moe_global", "moe_local"} <= set(log[0])
    m = json.loads((out / "metrics_test.json").read_text())
    assert set(m["au_f1"]) == {"AU01", "AU12", "AU25"}  # exactly the AUs the shards label
    assert m["emotion_accuracy"] == 1.0 and m["au_f1"]["AU12"] == 1.0
    r = json.loads((out / "routing_test.json").read_text())
    assert r["experts"] == 4 and set(r["mean_gates"]) >= {"AU12", "neutral", "happy"}
    assert all(abs(sum(v) - 1) < 1e-5 for v in r["mean_gates"].values())
    assert (out / "routing_test.png").stat().st_size > 1000


def test_classifier_single_task_and_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = _cla_config(shards, tmp_path, 3, classifier={"task": "emotion"})
    del cfg["test_data"]
    resume_matches(classifier.run, cfg, tmp_path, ["classifier.safetensors"])
    log = read_log(tmp_path / "a" / "log.csv")
    assert "emotion" in log[0] and "au_occurrence" not in log[0]
