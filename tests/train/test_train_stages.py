"""Each training stage on a tiny model (img 32, patch 8, dim 32, depth 1) and tiny real shards:
the loss falls by a stated factor, and resuming from a checkpoint reproduces the next step exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train import classifier, mae, normalizer
from train.common import read_log

from train_helpers import TINY_MODEL, make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "sh", n=16, size=32)


def _run(out: Path, steps: int, **kw: Any) -> dict[str, Any]:
    return {"out_dir": str(out), "steps": steps, "batch_size": 4, "log_every": kw.pop("log_every", 1),
            "ckpt_every": kw.pop("ckpt_every", 1000), "progress": False, "seed": 3, **kw}


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _resume_matches(run_fn: Any, config: dict[str, Any], tmp: Path, files: list[str]) -> None:
    """Run 3 steps straight (checkpoint at 2 and 3); copy the step-2 checkpoint into a fresh run
    dir and resume: step 3 must give bit-identical weights and the same logged losses."""
    a, b = tmp / "a", tmp / "b"
    run_fn({**config, "run": _run(a, 3, ckpt_every=2)}, resume=True)
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "step-00000002", b / "checkpoints" / "step-00000002")
    run_fn({**config, "run": _run(b, 3, ckpt_every=2)}, resume=True)
    for f in files:
        _assert_same_weights(a / "checkpoints" / "step-00000003" / f, b / "checkpoints" / "step-00000003" / f)
    la, lb = read_log(a / "log.csv"), read_log(b / "log.csv")
    assert la[-1] == lb[-1] and lb[-1]["step"] == 3 and len(lb) == 1


# ------------------------------------------------------------------------------------------- MAE

def test_mae_overfits_tiny_set(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "optim": {"lr": 2e-3},
           "run": _run(tmp_path, 150, log_every=10)}
    out = mae.run(cfg)
    losses = [r["loss"] for r in read_log(out / "log.csv")]
    # masked-patch MSE on per-patch-normalised pixels starts near 1; memorising 16 faces halves it
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    assert (out / "encoder.safetensors").is_file()


def test_mae_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}}
    _resume_matches(mae.run, cfg, tmp_path, ["mae.safetensors"])


# ------------------------------------------------------------------------------------ normalizer

@pytest.fixture(scope="module")
def aux_nets(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from train.aux import train_aux

    out = tmp_path_factory.mktemp("aux")
    paths = {}
    for kind in ("identity", "landmarks", "expression", "blendshapes", "perceptual"):
        cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
               "aux": {"kind": kind, "width": 8, "stages": 2, "dim": 16,
                       "output_names": ["jawOpen", "browInnerUp", "mouthSmileLeft", "browDownLeft"]},
               "optim": {"lr": 3e-3}, "run": _run(out, 40, log_every=5)}
        paths[kind] = str(train_aux.run(cfg))
        losses = [r["loss"] for r in read_log(out / f"aux_{kind}_log.csv")]
        assert np.mean(losses[-2:]) < 0.8 * losses[0], (kind, losses)
    return paths


def test_normalizer_all_terms_and_reconstruction_falls(shards: Path, aux_nets: dict[str, str],
                                                       tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "aux": aux_nets,
           "optim": {"lr": 1e-3}, "normalizer": {"p_same": 1.0, "target_image": "synthetic"},
           "run": _run(tmp_path, 50, log_every=1)}
    out = normalizer.run(cfg)
    log = read_log(out / "log.csv")
    assert {"adv", "rec", "perc", "id", "lm", "exp", "eye", "d", "total"} <= set(log[0])
    rec = [r["rec"] for r in log]
    # with I_t = I_o for every row, L1 reconstruction of 16 faces must at least halve
    assert np.mean(rec[-5:]) < 0.5 * np.mean(rec[:3]), rec
    assert (out / "normalizer.safetensors").is_file()


def test_normalizer_pair_term_and_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
           "normalizer": {"p_same": 0.3, "pair_prob": 1.0, "target_image": "synthetic"}}
    _resume_matches(normalizer.run, cfg, tmp_path, ["normalizer.safetensors", "discriminator.safetensors"])
    log = read_log(tmp_path / "a" / "log.csv")
    assert "pair" in log[0]


def test_normalizer_rejects_unknown_option(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown normalizer fields \['p_sam'\]"):
        normalizer.run({"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
                        "normalizer": {"p_sam": 0.1}, "run": _run(tmp_path, 1)})


# ------------------------------------------------------------------------------------ classifier

def _cla_config(shards: Path, out: Path, steps: int, **kw: Any) -> dict[str, Any]:
    return {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
            "test_data": {"kind": "shards", "path": str(shards)},
            "classifier": {"task": "multi", **kw.pop("classifier", {})}, "optim": {"lr": 2e-3},
            "run": _run(out, steps, **kw)}


def test_classifier_overfits_and_reports(shards: Path, tmp_path: Path) -> None:
    out = classifier.run(_cla_config(shards, tmp_path, 120, log_every=10))
    log = read_log(out / "log.csv")
    cla = [r["cla"] for r in log]
    assert np.mean(cla[-2:]) < 0.5 * cla[0], cla
    assert {"emotion", "au_occurrence", "au_intensity", "moe_importance", "moe_global", "moe_local"} <= set(log[0])
    m = json.loads((out / "metrics_test.json").read_text())
    assert set(m["au_f1"]) == {"AU01", "AU12", "AU25"}  # exactly the AUs the shards label
    assert m["emotion_accuracy"] >= 0.75
    r = json.loads((out / "routing_test.json").read_text())
    assert r["experts"] == 4 and set(r["mean_gates"]) >= {"AU12", "neutral", "happy"}
    assert all(abs(sum(v) - 1) < 1e-5 for v in r["mean_gates"].values())
    assert (out / "routing_test.png").stat().st_size > 1000


def test_classifier_single_task_and_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = _cla_config(shards, tmp_path, 3, classifier={"task": "emotion"})
    del cfg["test_data"]
    _resume_matches(classifier.run, cfg, tmp_path, ["classifier.safetensors"])
    log = read_log(tmp_path / "a" / "log.csv")
    assert "emotion" in log[0] and "au_occurrence" not in log[0]
