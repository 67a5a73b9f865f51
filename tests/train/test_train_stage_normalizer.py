"""Aux nets and the normalizer stage: every term computed, reconstruction falls, resume exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.common import read_log

from train_helpers import TINY_MODEL, make_shards, resume_matches, run_section

from train import normalizer

@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards") / "sh", n=16, size=32)


# ------------------------------------------------------------------------------------ normalizer

@pytest.fixture(scope="module")
def aux_nets(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from train.auxnets import train_aux

    out = tmp_path_factory.mktemp("aux")
    paths = {}
    for kind in ("identity", "landmarks", "expression", "blendshapes", "perceptual"):
        cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
               "aux": {"kind": kind, "width": 8, "stages": 2, "dim": 16,
                       "output_names": ["jawOpen", "browInnerUp", "mouthSmileLeft", "browDownLeft"]},
               "optim": {"lr": 3e-3}, "run": run_section(out, 30, log_every=5)}
        paths[kind] = str(train_aux.run(cfg))
        losses = [r["loss"] for r in read_log(out / f"aux_{kind}_log.csv")]
        assert np.mean(losses[-2:]) < 0.8 * losses[0], (kind, losses)
    return paths


def test_normalizer_uses_every_aux_term(shards: Path, aux_nets: dict[str, str], tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "aux": aux_nets,
           "normalizer": {"p_same": 0.5, "target_image": "synthetic"}, "run": run_section(tmp_path, 3)}
    out = normalizer.run(cfg)
    log = read_log(out / "log.csv")
    assert {"adv", "rec", "perc", "id", "lm", "exp", "eye", "pair", "d", "total"} <= set(log[0])
    assert all(np.isfinite(v) for r in log for v in r.values())
    assert (out / "normalizer.safetensors").is_file()


def test_normalizer_overfits_reconstruction(shards: Path, tmp_path: Path) -> None:
    # I_t = I_o for every row: L1 reconstruction of 16 faces must at least halve in 40 steps
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "optim": {"lr": 2e-3},
           "normalizer": {"p_same": 1.0}, "run": run_section(tmp_path, 40)}
    rec = [r["rec"] for r in read_log(normalizer.run(cfg) / "log.csv")]
    assert np.mean(rec[-5:]) < 0.5 * np.mean(rec[:3]), rec


def test_normalizer_pair_term_and_resume_is_exact(shards: Path, tmp_path: Path) -> None:
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
           "normalizer": {"p_same": 0.3, "pair_prob": 1.0, "target_image": "synthetic"}}
    resume_matches(normalizer.run, cfg, tmp_path, ["normalizer.safetensors", "discriminator.safetensors"])
    log = read_log(tmp_path / "a" / "log.csv")
    assert "pair" in log[0]


def test_normalizer_rejects_unknown_option(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown normalizer fields \['p_sam'\]"):
        normalizer.run({"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
                        "normalizer": {"p_sam": 0.1}, "run": run_section(tmp_path, 1)})




def test_discriminator_judges_the_pair_target_and_normalized(shards: Path, tmp_path: Path) -> None:
    """The paper's D sees [I_t, I_n]: 6 input channels, and its verdict depends on I_t."""
    import torch

    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)},
           "normalizer": {"target_image": "synthetic", "pair_prob": 1.0},
           "optim": {"lr": 1e-3}, "run": run_section(tmp_path / "run", 2)}
    trainer = normalizer.NormalizerTrainer(cfg)
    assert trainer.D.cfg.in_channels == 6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = trainer.D(torch.cat([x, x], 1))
        b = trainer.D(torch.cat([torch.randn_like(x), x], 1))
    assert not torch.allclose(a, b)


def test_normalizer_without_adversarial_term_skips_the_discriminator(shards: Path, tmp_path: Path) -> None:
    # The CPU recipe sets adv=0: the discriminator must then neither run nor change, and the
    # augmented, pair-supervised objective must still fall.
    import torch
    from train.normalizer import NormalizerTrainer
    cfg = {"model": TINY_MODEL, "data": {"kind": "shards", "path": str(shards)}, "optim": {"lr": 2e-3},
           "normalizer": {"p_same": 0.5, "pair_prob": 1.0, "target_image": "synthetic", "augment": {}},
           "loss_weights": {"adv": 0.0}, "run": run_section(tmp_path, 30, log_every=2)}
    t = NormalizerTrainer(cfg)
    before = {k: v.clone() for k, v in t.D.state_dict().items()}
    calls = []
    t.D.register_forward_hook(lambda *a: calls.append(1))
    t.run(resume=False)
    assert not calls
    assert all(torch.equal(before[k], v) for k, v in t.D.state_dict().items())
    log = read_log(tmp_path / "log.csv")
    assert all(r["d"] == 0.0 for r in log)
    total = [r["total"] for r in log]
    assert np.mean(total[-3:]) < 0.8 * np.mean(total[:3]), total


def test_residual_normalizer_with_position_prior_learns_the_pairs(shards: Path, tmp_path: Path) -> None:
    # The shipped recipe's options: the untrained network returns I_t, so the I_t = I_o rows start
    # at zero reconstruction error and all learning goes to the pair term, which must fall.
    import torch
    from safetensors.torch import load_file
    cfg = {"model": {**TINY_MODEL, "normalizer_residual": True, "emm_position_prior": 4.0},
           "data": {"kind": "shards", "path": str(shards)}, "optim": {"lr": 2e-3, "betas": [0.9, 0.99]},
           "normalizer": {"p_same": 0.3, "pair_prob": 1.0, "target_image": "synthetic",
                          "pair_expression_weight": 2.0},
           "loss_weights": {"adv": 0.0}, "run": run_section(tmp_path, 40, log_every=1)}
    out = normalizer.run(cfg)
    log = read_log(out / "log.csv")
    assert log[0]["rec"] == 0.0, log[0]
    pair = [r["pair"] for r in log]
    assert np.mean(pair[-3:]) < 0.8 * np.mean(pair[:3]), pair
    sd = load_file(str(out / "normalizer.safetensors"))
    bias = sd["emm.position_bias"]
    assert bias.shape == (16, 16) and not torch.equal(bias, torch.eye(16) * 4)  # learned, not frozen
