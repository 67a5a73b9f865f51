"""Export: PyTorch vs ONNX Runtime parity, metadata round trip, model sets, untrained init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from norface_rt.config import ModelConfig
from norface_rt.export import export_onnx, init_untrained, save_model_set, synthetic_target_image
from norface_rt.export.untrained import load_target_image
from norface_rt.model_set import read_graph_config as read_onnx_config
from norface_rt.models import NorfaceModel, create_model
from norface_rt.weights import load_torch_model

# Stated tolerances (max abs diff, ORT fused kernels vs PyTorch, float32)
TOL_PROB = 1e-4  # au_prob, emotion_prob
TOL_INTENSITY = 1e-3  # au_intensity, range [0, 5]
TOL_IMAGE = 1e-3  # normalized face, normalised pixel units (~1/8 of a uint8 step at std 0.5)


@pytest.fixture(scope="module")
def tiny() -> tuple[NorfaceModel, ModelConfig]:
    torch.manual_seed(1)
    cfg = ModelConfig.for_size("tiny")
    model = create_model("norface", cfg).eval()
    model.set_target(torch.randn(1, 3, 112, 112))
    return model, cfg


@pytest.fixture(scope="module")
def tiny_onnx(tiny: tuple[NorfaceModel, ModelConfig],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    model, cfg = tiny
    out = tmp_path_factory.mktemp("onnx")
    return (export_onnx(model, cfg, out / "n.onnx", graph="normalizer"),
            export_onnx(model, cfg, out / "c.onnx", graph="classifier"))


def run_halves(paths: tuple[Path, Path], x: np.ndarray) -> list[np.ndarray]:
    """normalizer then classifier: the model's four outputs, as the runtime computes them."""
    norm, cls = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths)
    (normalized,) = norm.run(None, {"face": x})
    return [normalized, *cls.run(None, {"normalized": normalized, "face": x})]


@pytest.fixture(scope="module")
def untrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_untrained(tmp_path_factory.mktemp("untrained"), size="tiny", seed=3)


@pytest.mark.parametrize("batch", [1, 3])
def test_export_parity(tiny: tuple[NorfaceModel, ModelConfig], tiny_onnx: tuple[Path, Path],
                       batch: int) -> None:
    model, _ = tiny
    x = torch.randn(batch, 3, 112, 112, generator=torch.Generator().manual_seed(batch))
    got = run_halves(tiny_onnx, x.numpy())
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    for name, g, r, tol in zip(["normalized", "au_prob", "au_intensity", "emotion_prob"], got, ref,
                               [TOL_IMAGE, TOL_PROB, TOL_INTENSITY, TOL_PROB]):
        assert g.shape == r.shape, name
        assert np.abs(g - r).max() <= tol, f"{name}: max abs diff {np.abs(g - r).max():.2e} > {tol}"
    # the untrained network is not constant: different faces give different outputs
    if batch == 3:
        assert np.abs(got[1][0] - got[1][1]).max() > 1e-4


def test_config_roundtrips_through_onnx_metadata(tiny: tuple[NorfaceModel, ModelConfig],
                                                 tiny_onnx: tuple[Path, Path]) -> None:
    _, cfg = tiny
    assert read_onnx_config(tiny_onnx[0]) == read_onnx_config(tiny_onnx[1]) == cfg
    meta = {p.key: p.value
            for p in onnx.load(str(tiny_onnx[1]), load_external_data=False).metadata_props}
    assert meta["norface_model_id"] == "norface-tiny-untrained"
    assert meta["norface_trained"] == "false"
    assert ModelConfig.from_json(meta["norface_config"]) == cfg


def test_export_refuses_bad_inputs(tmp_path: Path, tiny: tuple[NorfaceModel, ModelConfig]) -> None:
    model, cfg = tiny
    fresh = create_model("norface", cfg)
    with pytest.raises(ValueError, match="no target set"):
        export_onnx(fresh, cfg, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match=r"cfg: differs .* in fields \['depth'\]"):
        export_onnx(model, ModelConfig.for_size("tiny", depth=2), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match="model: expected NorfaceModel"):
        export_onnx(torch.nn.Linear(2, 2), cfg, tmp_path / "x.onnx")  # type: ignore[arg-type]
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_read_onnx_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        read_onnx_config(tmp_path / "missing.onnx")
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(plain), dynamo=False)
    with pytest.raises(ValueError, match="no 'norface_config' key"):
        read_onnx_config(plain)


def test_untrained_model_set(untrained_dir: Path) -> None:
    assert sorted(p.name for p in untrained_dir.iterdir()) == [
        "classifier.onnx", "config.json", "manifest.json", "normalizer.onnx", "target.png",
        "weights.safetensors"]
    cfg = ModelConfig.load(untrained_dir / "config.json")
    assert cfg.trained is False and cfg.model_id == "norface-tiny-untrained"
    assert "synthetic" in cfg.provenance["target"]
    assert "manual_seed(3)" in cfg.provenance["weights"]
    for name in ("normalizer.onnx", "classifier.onnx"):
        assert read_onnx_config(untrained_dir / name) == cfg, name
    state = load_file(str(untrained_dir / "weights.safetensors"))
    assert all(v.dtype == torch.float16 for k, v in state.items() if v.is_floating_point())
    assert state["target_tokens"].abs().sum() > 0


def test_torch_model_roundtrip_matches_onnx(untrained_dir: Path) -> None:
    """fp16 weights are rounded before export, so safetensors and ONNX hold the same network."""
    model = load_torch_model(untrained_dir)
    assert model.has_target and not model.training
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    got = run_halves((untrained_dir / "normalizer.onnx", untrained_dir / "classifier.onnx"),
                     x.numpy())
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    for g, r, tol in zip(got, ref, [TOL_IMAGE, TOL_PROB, TOL_INTENSITY, TOL_PROB]):
        assert np.abs(g - r).max() <= tol


def test_init_untrained_is_deterministic_and_takes_a_target(untrained_dir: Path, tmp_path: Path) -> None:
    target = synthetic_target_image(112, ModelConfig().template)
    assert target.shape == (112, 112, 3) and target.dtype == np.uint8
    assert np.array_equal(target, synthetic_target_image(112, ModelConfig().template))
    # same seed + the same image passed explicitly -> identical weights, different provenance
    other = init_untrained(tmp_path / "b", size="tiny", seed=3, target_image=target)
    a = load_file(str(untrained_dir / "weights.safetensors"))
    b = load_file(str(other / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "user-supplied array, sha256" in ModelConfig.load(other / "config.json").provenance["target"]
    with pytest.raises(ValueError, match=r"target_image: expected \(112, 112, 3\) uint8, got \(64, 64, 3\) uint8"):
        init_untrained(tmp_path / "c", size="tiny", target_image=target[:64, :64])


def test_save_model_set_fp32_and_config_mismatch(tmp_path: Path,
                                                 tiny: tuple[NorfaceModel, ModelConfig]) -> None:
    model, cfg = tiny
    out = save_model_set(model, cfg, tmp_path / "fp32", fp16_weights=False)
    state = load_file(str(out / "weights.safetensors"))
    assert torch.equal(state["target_tokens"], model.target_tokens)
    loaded = load_torch_model(out)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    # a config.json edited after the fact no longer matches the weights' embedded config
    ModelConfig.for_size("tiny", model_id="something-else").save(out / "config.json")
    with pytest.raises(ValueError, match="embedded config differs"):
        load_torch_model(out)


def test_split_graphs_have_the_model_set_io(untrained_dir: Path) -> None:
    """normalizer.onnx: face -> normalized; classifier.onnx: normalized, face -> probabilities,
    and the classifier really uses both inputs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    norm = ort.InferenceSession(str(untrained_dir / "normalizer.onnx"), opts, providers=cpu)
    cls = ort.InferenceSession(str(untrained_dir / "classifier.onnx"), opts, providers=cpu)
    assert [i.name for i in norm.get_inputs()] == ["face"]
    assert [o.name for o in norm.get_outputs()] == ["normalized"]
    assert [i.name for i in cls.get_inputs()] == ["normalized", "face"]
    assert [o.name for o in cls.get_outputs()] == ["au_prob", "au_intensity", "emotion_prob"]
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(7)).numpy()
    (normalized,) = norm.run(None, {"face": x})
    assert normalized.dtype == np.float32
    got = cls.run(None, {"normalized": normalized, "face": x})
    other = cls.run(None, {"normalized": np.zeros_like(normalized), "face": x})
    assert np.abs(other[0] - got[0]).max() > 1e-4


def test_split_halves_match_torch(untrained_dir: Path, tiny: tuple[NorfaceModel, ModelConfig],
                                  tmp_path: Path) -> None:
    model = load_torch_model(untrained_dir)
    cpu = ["CPUExecutionProvider"]
    norm = ort.InferenceSession(str(untrained_dir / "normalizer.onnx"), providers=cpu)
    cls = ort.InferenceSession(str(untrained_dir / "classifier.onnx"), providers=cpu)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref_n = model.normalize(x)
        ref = [t.numpy() for t in model.classify(ref_n, x)]
    assert np.abs(norm.run(None, {"face": x.numpy()})[0] - ref_n.numpy()).max() <= TOL_IMAGE
    got = cls.run(None, {"normalized": ref_n.numpy(), "face": x.numpy()})
    for g, r, tol in zip(got, ref, [TOL_PROB, TOL_INTENSITY, TOL_PROB]):
        assert np.abs(g - r).max() <= tol
    with pytest.raises(ValueError, match=r"graph must be one of \['normalizer', 'classifier'\], "
                                         r"got 'encoder'"):
        export_onnx(tiny[0], tiny[1], tmp_path / "e.onnx", graph="encoder")  # type: ignore[arg-type]
    assert not (tmp_path / "e.onnx").exists()


def test_residual_model_with_position_prior_exports_and_reloads(tmp_path: Path) -> None:
    """The shipped recipe's normalizer options (residual decoder, EMM position prior): the target
    image travels in the weights and as a constant of the graphs, and every backend path agrees."""
    torch.manual_seed(4)
    cfg = ModelConfig.for_size("tiny", normalizer_residual=True, emm_position_prior=4.0)
    model = create_model("norface", cfg).eval()
    with torch.no_grad():  # a trained head is not zero; make the residual path carry something
        model.normalizer.decoder.head[0].weight.normal_(0, 0.02)
    target = torch.randn(1, 3, 112, 112)
    model.set_target(target)
    out = save_model_set(model, cfg, tmp_path / "set", fp16_weights=False)
    loaded = load_torch_model(out)
    assert torch.equal(loaded.target_image, target)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
        assert np.abs(ref[0] - target.numpy()).max() > 0.05  # not simply the target
    got = run_halves((out / "normalizer.onnx", out / "classifier.onnx"), x.numpy())
    for g, r, tol in zip(got, ref, [TOL_IMAGE, TOL_PROB, TOL_INTENSITY, TOL_PROB]):
        assert np.abs(g - r).max() <= tol


def test_one_target_loader_for_every_spec(tmp_path: Path) -> None:
    """"synthetic", a file (resized to the input size) or an array all give the same kind of crop."""
    import cv2

    cfg = ModelConfig.for_size("tiny")
    synthetic = load_target_image("synthetic", cfg)
    assert np.array_equal(synthetic, load_target_image(None, cfg))
    big = cv2.resize(synthetic, (224, 224), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "t.png"), big[:, :, ::-1])
    from_file = load_target_image(tmp_path / "t.png", cfg)
    assert from_file.shape == (112, 112, 3) and np.abs(from_file.astype(int) - synthetic).mean() < 3
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((50, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="target_image: expected an aligned square crop, got 80x50"):
        load_target_image(tmp_path / "wide.png", cfg)
    with pytest.raises(ValueError, match="target_image: cannot (read|decode) image"):
        load_target_image(tmp_path / "t.png.missing", cfg)
