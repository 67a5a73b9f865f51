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
