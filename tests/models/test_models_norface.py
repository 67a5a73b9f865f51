from __future__ import annotations

import pytest
import torch

from norface_rt.config import ModelConfig
from norface_rt.models import (
    MAE,
    MODEL_REGISTRY,
    ClassificationNet,
    ConvDecoder,
    NormalizationNet,
    NorfaceModel,
    create_model,
)


def test_conv_decoder_shapes(micro_cfg: ModelConfig) -> None:
    dec = ConvDecoder(micro_cfg)
    assert dec(torch.randn(2, 16, 32)).shape == (2, 3, 32, 32)
    assert dec(torch.randn(2, 17, 32)).shape == (2, 3, 32, 32)  # cls token dropped
    with pytest.raises(ValueError, match="expected 16 patch tokens"):
        dec(torch.randn(2, 15, 32))
    small = ModelConfig.for_size("small")
    assert ConvDecoder(small).eval()(torch.randn(1, 49, 192)).shape == (1, 3, 112, 112)
    with pytest.raises(ValueError, match="power of two"):
        ConvDecoder(ModelConfig.for_size("tiny", img_size=36, patch_size=12))


def test_normalizer_and_classifier_shapes(micro_cfg: ModelConfig) -> None:
    x, t = torch.randn(3, 3, 32, 32), torch.randn(1, 3, 32, 32)
    norm = NormalizationNet(micro_cfg).eval()
    tokens = norm.encode_target(t)
    assert tokens.shape == (1, 16, 32)
    i_n = norm(x, tokens)
    assert i_n.shape == (3, 3, 32, 32)
    cls = ClassificationNet(micro_cfg).eval()
    out = cls(i_n, x)
    a, e = len(micro_cfg.au_names), len(micro_cfg.emotion_names)
    assert out.au_logits.shape == (3, a) and out.emotion_logits.shape == (3, e)
    assert out.au_intensity.shape == (3, a)
    assert torch.all((out.au_intensity >= 0) & (out.au_intensity <= micro_cfg.au_intensity_max))
    for moe in (out.moe_normalized, out.moe_original, out.moe_output):
        assert moe.gates.shape == (3, micro_cfg.moe_experts)
        assert torch.all((moe.gates > 0).sum(1) == micro_cfg.moe_top_k)
    # the classifier really looks at both images
    assert not torch.allclose(cls(i_n, x + 1).au_logits, out.au_logits)
    assert not torch.allclose(cls(i_n + 1, x).au_logits, out.au_logits)
    with pytest.raises(ValueError, match=r"original: expected \(B, 3, 32, 32\), got \(3, 3, 16, 16\)"):
        norm(torch.randn(3, 3, 16, 16), tokens)


def test_norface_inference_graph_outputs(micro_cfg: ModelConfig) -> None:
    model = NorfaceModel(micro_cfg).eval()
    assert not model.has_target
    model.set_target(torch.randn(3, 32, 32))
    assert model.has_target
    normalized, au_prob, au_int, emo = model(torch.randn(4, 3, 32, 32))
    assert normalized.shape == (4, 3, 32, 32)
    assert au_prob.shape == (4, 18) and torch.all((au_prob > 0) & (au_prob < 1))
    assert au_int.shape == (4, 18) and torch.all((au_int >= 0) & (au_int <= 5))
    assert emo.shape == (4, 8) and torch.allclose(emo.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="image: expected"):
        model.set_target(torch.randn(2, 3, 32, 32))


def test_cached_target_equals_recomputing(micro_cfg: ModelConfig) -> None:
    model = NorfaceModel(micro_cfg).eval()
    target, faces = torch.randn(1, 3, 32, 32), torch.randn(3, 3, 32, 32)
    model.set_target(target)
    with torch.no_grad():
        cached = model(faces)
        i_n = model.normalizer(faces, model.normalizer.encode_target(target))
        ref = model.classifier(i_n, faces)
    assert torch.equal(cached[0], i_n)
    assert torch.allclose(cached[1], torch.sigmoid(ref.au_logits))
    assert torch.allclose(cached[2], ref.au_intensity)
    assert torch.allclose(cached[3], torch.softmax(ref.emotion_logits, -1))
    # the cache is part of the state dict and a different target changes the normalized face
    assert "target_tokens" in model.state_dict()
    model.set_target(torch.randn(1, 3, 32, 32))
    with torch.no_grad():
        assert not torch.allclose(model(faces)[0], cached[0])


def test_registry(micro_cfg: ModelConfig) -> None:
    assert set(MODEL_REGISTRY) == {"mae", "normalizer", "classifier", "norface"}
    assert isinstance(create_model("mae", micro_cfg), MAE)
    assert isinstance(create_model("normalizer", micro_cfg), NormalizationNet)
    assert isinstance(create_model("classifier", micro_cfg), ClassificationNet)
    assert isinstance(create_model("norface", micro_cfg), NorfaceModel)
    assert create_model("mae", micro_cfg, norm_pix_loss=False).norm_pix_loss is False
    with pytest.raises(ValueError, match=r"kind must be one of \['classifier', 'mae', 'norface', 'normalizer'\], got 'vit'"):
        create_model("vit", micro_cfg)
    with pytest.raises(TypeError, match="cfg: expected ModelConfig"):
        create_model("mae", {"size": "tiny"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MODEL_REGISTRY["x"] = MAE  # type: ignore[index]


def test_split_halves_compose_to_the_full_model(micro_cfg: ModelConfig) -> None:
    from norface_rt.models.norface import ClassifierGraph, NormalizerGraph

    model = NorfaceModel(micro_cfg).eval()
    model.set_target(torch.randn(1, 3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    norm, cls = NormalizerGraph(model), ClassifierGraph(model)
    with torch.no_grad():
        full = model(x)
        normalized = norm(x)
        probs = cls(normalized, x)
    assert len(probs) == 3
    for got, ref in zip((normalized, *probs), full):
        assert torch.equal(got, ref)  # the same ops on the same tensors: bit-identical
    assert torch.allclose(probs[2].sum(-1), torch.ones(3))
    # views, not copies: a weight change in the model shows in the half
    assert norm.model is model and cls.model is model
    with torch.no_grad():
        model.classifier.au_head.bias.add_(1.0)
        assert not torch.equal(cls(normalized, x)[0], probs[0])
    with pytest.raises(TypeError, match="model: expected NorfaceModel, got Linear"):
        NormalizerGraph(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def _residual_cfg(micro_cfg: ModelConfig) -> ModelConfig:
    d = micro_cfg.to_dict()
    d.update(normalizer_residual=True, emm_position_prior=4.0)
    return ModelConfig.from_dict(d)


def _randomise_head(decoder: ConvDecoder) -> None:
    with torch.no_grad():
        decoder.head[0].weight.normal_(0, 0.05)
        decoder.head[0].bias.normal_(0, 0.05)


def test_residual_normalizer_starts_at_the_target(micro_cfg: ModelConfig) -> None:
    cfg = _residual_cfg(micro_cfg)
    net = NormalizationNet(cfg).eval()
    faces, target = torch.randn(3, 3, 32, 32), torch.randn(1, 3, 32, 32)
    tokens = net.encode_target(target)
    with torch.no_grad():
        # zero-initialised head: an untrained residual normalizer returns I_t exactly
        assert torch.equal(net(faces, tokens, target), target.expand(3, -1, -1, -1))
        _randomise_head(net.decoder)
        out = net(faces, tokens, target)
        assert torch.allclose(out - target, net.decoder(net.emm(tokens, net.encoder(faces))), atol=1e-6)
    with pytest.raises(ValueError, match="target_image: required when normalizer_residual is true, got None"):
        net(faces, tokens)
    with pytest.raises(ValueError, match=r"target_image: expected \(B, 3, 32, 32\), got \(1, 3, 16, 16\)"):
        net(faces, tokens, torch.randn(1, 3, 16, 16))
    # the paper's plain decoder ignores a target image it does not need
    plain = NormalizationNet(micro_cfg).eval()
    with torch.no_grad():
        assert torch.equal(plain(faces, tokens), plain(faces, tokens, target))


def test_residual_model_caches_the_target_image(micro_cfg: ModelConfig) -> None:
    cfg = _residual_cfg(micro_cfg)
    model = NorfaceModel(cfg).eval()
    _randomise_head(model.normalizer.decoder)
    target, faces = torch.randn(1, 3, 32, 32), torch.randn(2, 3, 32, 32)
    model.set_target(target)
    sd = model.state_dict()
    assert torch.equal(sd["target_image"], target)
    assert "normalizer.emm.position_bias" in sd
    with torch.no_grad():
        ref = model.normalizer(faces, model.normalizer.encode_target(target), target)
        assert torch.equal(model.normalize(faces), ref)
        assert torch.equal(model(faces)[0], ref)
    # a residual model's state dict round-trips into a fresh model; a plain one has neither extra
    fresh = NorfaceModel(cfg)
    fresh.load_state_dict(sd)
    assert fresh.has_target and torch.equal(fresh.target_image, target)
    assert "target_image" not in NorfaceModel(micro_cfg).state_dict()


def test_normalizer_options_are_validated_and_saved(micro_cfg: ModelConfig) -> None:
    cfg = _residual_cfg(micro_cfg)
    back = ModelConfig.from_json(cfg.to_json())
    assert back.normalizer_residual is True and back.emm_position_prior == 4.0
    with pytest.raises(ValueError, match="emm_position_prior must be in \\[0, 20\\], got -1.0"):
        ModelConfig.for_size("tiny", emm_position_prior=-1)
