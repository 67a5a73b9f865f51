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


def test_ablation_without_normalized_image_ignores_the_normalizer(shards: Path, tmp_path: Path) -> None:
    # "w/o I_n": the original face feeds both branches, so the (random) normalizer weights must not
    # matter at all; with I_n they do.
    import torch
    from train.classifier import ClassifierTrainer
    from train.data.build import build_dataset

    def preds(use_n: bool, seed: int) -> np.ndarray:
        cfg = _cla_config(shards, tmp_path / f"r{use_n}{seed}", 1,
                          classifier={"use_normalized": use_n, "augment": {"flip_prob": 0.5}})
        t = ClassifierTrainer(cfg)
        torch.manual_seed(seed)
        for p in t.normalizer.parameters():
            p.data.normal_(0, 0.2)
        ds = build_dataset(cfg["data"], t.mcfg)
        from train.evaluate import predict
        t.model.eval()
        return predict(t.normalizer if use_n else None, t.target_tokens, t.model, ds, t.mcfg, 8)["au_prob"]

    np.testing.assert_allclose(preds(False, 1), preds(False, 2), atol=1e-6)
    assert np.abs(preds(True, 1) - preds(True, 2)).max() > 1e-4


def test_ablation_without_moe_trains(shards: Path, tmp_path: Path) -> None:
    # one expert, top-1, no noise: the MoE blocks become plain MLPs (gate == 1); no balance terms
    cfg = _cla_config(shards, tmp_path, 4, classifier={"importance_blocks": [], "balance_blocks": []})
    cfg["model"] = {**TINY_MODEL, "moe_experts": 1, "moe_top_k": 1, "moe_noise": False}
    out = classifier.run(cfg)
    res = json.loads((out / "metrics_test.json").read_text())
    assert res["n"] == 16 and np.isfinite(res["au_mae_mean"])
    log = read_log(out / "log.csv")
    assert "importance" not in log[0] and "global" not in log[0]
    with pytest.raises(ValueError, match="use_normalized"):
        classifier.ClassifierTrainer(_cla_config(shards, tmp_path / "bad", 1,
                                                 classifier={"use_normalized": "yes"}))


def test_classifier_continues_from_init_weights(shards: Path, tmp_path: Path) -> None:
    # The shipped recipe continues a finished classifier on a new normalizer: every weight of the
    # first run is loaded before the first step.
    import torch
    from safetensors.torch import load_file
    first = classifier.run(_cla_config(shards, tmp_path / "first", 3))
    cfg = _cla_config(shards, tmp_path / "second", 1,
                      classifier={"init_weights": str(first / "classifier.safetensors")})
    trainer = classifier.ClassifierTrainer(cfg)
    want = load_file(str(first / "classifier.safetensors"))
    got = trainer.model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    both = _cla_config(shards, tmp_path / "third", 1,
                       classifier={"init_weights": str(first / "classifier.safetensors"),
                                   "init_encoder": str(first / "classifier.safetensors")})
    with pytest.raises(ValueError, match="set init_encoder or init_weights, not both"):
        classifier.ClassifierTrainer(both)
