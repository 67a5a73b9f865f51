"""The classifier's geometry input: shapes, errors, both emotion read-outs, the emotion prior."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from norface_rt.config import ModelConfig
from norface_rt.models import NorfaceModel, create_model


def with_geometry(cfg: ModelConfig, **kw: object) -> ModelConfig:
    g = 5
    fields = {"geometry_inputs": ("blendshapes",), "blendshape_names": tuple(f"s{i}" for i in range(g)),
              "geometry_reference": (0.1,) * g, "geometry_spread": (0.2,) * g, **kw}
    return dataclasses.replace(cfg, **fields)  # type: ignore[arg-type]


@pytest.fixture()
def geo_model(micro_cfg: ModelConfig) -> NorfaceModel:
    m = create_model("norface", with_geometry(micro_cfg)).eval()
    m.set_target(torch.randn(1, 3, micro_cfg.img_size, micro_cfg.img_size))
    return m


def test_geometry_changes_the_outputs_and_both_readouts_exist(geo_model: NorfaceModel) -> None:
    cfg = geo_model.cfg
    x = torch.randn(3, 3, cfg.img_size, cfg.img_size)
    g0, g1 = torch.zeros(3, 5), torch.rand(3, 5)
    with torch.no_grad():
        a = geo_model.forward_full(x, g0)[1]
        b = geo_model.forward_full(x, g1)[1]
    assert a.emotion_logits_geometry is not None and a.emotion_logits_fused is not None
    assert torch.equal(a.emotion_logits, a.emotion_logits_fused)  # "fused" is the default
    assert not torch.allclose(a.au_logits, b.au_logits)  # the third input is really used
    assert not torch.allclose(a.emotion_logits_geometry, b.emotion_logits_geometry)
    with pytest.raises(ValueError, match="got None"):
        geo_model(x)
    with pytest.raises(ValueError, match=r"expected \(3, 5\)"):
        geo_model(x, torch.zeros(3, 4))


def test_image_only_model_refuses_geometry(micro_cfg: ModelConfig) -> None:
    m = create_model("norface", micro_cfg).eval()
    m.set_target(torch.randn(1, 3, micro_cfg.img_size, micro_cfg.img_size))
    x = torch.randn(2, 3, micro_cfg.img_size, micro_cfg.img_size)
    with pytest.raises(ValueError, match="no geometry input"):
        m(x, torch.zeros(2, 5))


def test_geometry_readout_outputs_the_geometry_head(micro_cfg: ModelConfig) -> None:
    m = create_model("norface", with_geometry(micro_cfg, emotion_readout="geometry")).eval()
    x = torch.randn(2, 3, micro_cfg.img_size, micro_cfg.img_size)
    with torch.no_grad():
        out = m.classifier(x, x, torch.rand(2, 5))
    assert torch.equal(out.emotion_logits, out.emotion_logits_geometry)


def test_emotion_prior_is_a_logit_adjustment(micro_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    plain = create_model("norface", micro_cfg).eval()
    prior = (4.0, 1, 1, 1, 1, 1, 1, 1)
    shifted = create_model("norface", dataclasses.replace(micro_cfg, emotion_prior=prior)).eval()
    shifted.load_state_dict(plain.state_dict())  # the prior is no weight: same state dict keys
    x = torch.randn(2, 3, micro_cfg.img_size, micro_cfg.img_size)
    with torch.no_grad():
        p = plain.classify(x, x)[2]
        q = shifted.classify(x, x)[2]
    # softmax(l + log prior): the odds of class 0 against any other grow exactly 4-fold
    torch.testing.assert_close(q[:, 0] / q[:, 1], 4 * p[:, 0] / p[:, 1], rtol=1e-4, atol=0)


@pytest.mark.parametrize("kw, match", [
    ({"geometry_inputs": ("landmarks",)}, "geometry_inputs"),
    ({"geometry_inputs": ("blendshapes",)}, "blendshape_names"),
    ({"emotion_readout": "geometry"}, "needs geometry_inputs"),
    ({"emotion_readout": "texture"}, "emotion_readout"),
    ({"emotion_prior": (1.0, 2.0)}, "emotion_prior"),
    ({"emotion_prior": (0.0,) * 8}, "emotion_prior"),
])
def test_config_validation_names_the_field(micro_cfg: ModelConfig, kw: dict[str, object],
                                            match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(micro_cfg, **kw)  # type: ignore[arg-type]


def test_config_geometry_lengths_must_agree(micro_cfg: ModelConfig) -> None:
    with pytest.raises(ValueError, match="geometry_reference must have geometry_dim=5"):
        with_geometry(micro_cfg, geometry_reference=(0.1,) * 4)
    with pytest.raises(ValueError, match="geometry_spread values must be > 0"):
        with_geometry(micro_cfg, geometry_spread=(0.0,) * 5)
    cfg = with_geometry(micro_cfg)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
