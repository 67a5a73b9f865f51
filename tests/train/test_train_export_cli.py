"""Export to a runtime model set, the `python -m train` CLI, 3-fold CV and cross-dataset
evaluation on a fixture dataset, aux-net loading, and MediaPipe-based alignment of a real photo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from norface_rt.models.registry import create_model
from train.__main__ import main
from train.common import model_config

from train_helpers import TINY_MODEL, face_image, make_shards, run_section


def _random_weights(tmp: Path) -> tuple[Path, Path]:
    cfg = model_config(TINY_MODEL)
    torch.manual_seed(1)
    paths = []
    for kind in ("normalizer", "classifier"):
        m = create_model(kind, cfg)
        p = tmp / f"{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p))
        paths.append(p)
    return paths[0], paths[1]


def test_export_builds_a_runtime_model_set(tmp_path: Path) -> None:
    import onnxruntime as ort

    from norface_rt.model_set import read_graph_config
    from norface_rt.weights import load_torch_model

    nor, cla = _random_weights(tmp_path)
    cfg_file = tmp_path / "export.json"
    cfg_file.write_text(json.dumps({"stage": "export", "model": TINY_MODEL, "export": {
        "normalizer_weights": str(nor), "classifier_weights": str(cla), "out_dir": str(tmp_path / "set"),
        "model_id": "tiny-test", "provenance": {"data": "unit test"}}}))
    assert main(["export", "--config", str(cfg_file)]) == 0
    out = tmp_path / "set"
    cfg = read_graph_config(out / "classifier.onnx")
    assert cfg.trained and cfg.model_id == "tiny-test" and cfg.provenance["data"] == "unit test"
    assert len(cfg.provenance["classifier_weights_sha256"]) == 64
    model = load_torch_model(out)
    x = torch.randn(2, 3, 32, 32)
    norm, cls = (ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                 for f in ("normalizer.onnx", "classifier.onnx"))
    (normalized,) = norm.run(None, {"face": x.numpy()})
    onnx_out = [normalized, *cls.run(None, {"normalized": normalized, "face": x.numpy()})]
    with torch.no_grad():
        torch_out = model(x)
    for a, b in zip(onnx_out, torch_out):
        np.testing.assert_allclose(a, b.numpy(), atol=2e-3)


def test_cli_overrides_and_rejects_wrong_stage(tmp_path: Path) -> None:
    shards = make_shards(tmp_path / "sh", n=8)
    cfg = tmp_path / "mae.toml"
    cfg.write_text(f'stage = "mae"\n[model]\nimg_size = 32\npatch_size = 8\nembed_dim = 32\ndepth = 1\n'
                   f'num_heads = 2\nemm_heads = 2\nmae_decoder_dim = 32\nmae_decoder_depth = 1\n'
                   f'[data]\nkind = "shards"\npath = "{shards}"\n'
                   f'[run]\nout_dir = "{tmp_path / "run"}"\nsteps = 50\nbatch_size = 4\nprogress = false\n')
    assert main(["mae", "--config", str(cfg), "--set", "run.steps=2", "--set", "run.ckpt_every=1"]) == 0
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-00000001", "step-00000002"]
    with pytest.raises(SystemExit, match="is for stage 'mae', not 'normalizer'"):
        main(["normalizer", "--config", str(cfg)])
    with pytest.raises(ValueError, match="unknown run fields"):
        main(["mae", "--config", str(cfg), "--set", "run.stepz=1", "--no-resume"])


def _fold_dataset(root: Path) -> Path:
    """A folder-adapter dataset with one subject per JAA-Net-style part, and its split file."""
    import cv2

    rows = ["path,subject,emotion,AU12,AU12_intensity,points5"]
    tpl = np.asarray(model_config(TINY_MODEL).template) * 32 - 0.5
    pts = ";".join(f"{v:.2f}" for v in tpl.reshape(-1))
    for s, subj in enumerate(("S1", "S2", "S3")):
        for i in range(4):
            expr = i / 3
            p = root / "img" / f"{subj}_{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), face_image(32, s, expr, seed=10 * s + i)[:, :, ::-1])
            rows.append(f"img/{p.name},{subj},{'happy' if expr > 0.5 else 'neutral'},{int(expr > 0.5)},"
                        f"{5 * expr:.2f},{pts}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    split = root / "split.json"
    split.write_text(json.dumps({"dataset": "toy", "parts": [["S1"], ["S2"], ["S3"]], "folds": [
        {"name": "fold1", "train_parts": [1, 2], "test_part": 3},
        {"name": "fold2", "train_parts": [1, 3], "test_part": 2},
        {"name": "fold3", "train_parts": [2, 3], "test_part": 1}]}))
    return split


def test_cv_and_cross_dataset_evaluation(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    split = _fold_dataset(root)
    nor, _ = _random_weights(tmp_path)
    spec = {"kind": "folder", "root": str(root), "split_file": str(split), "cache_dir": str(tmp_path / "cache")}
    cfg = {"stage": "cv", "model": TINY_MODEL, "data": spec, "test_data": spec,
           "classifier": {"task": "multi", "normalizer_weights": str(nor)},
           "run": run_section(tmp_path / "cv", 2, batch_size=4)}
    (tmp_path / "cv.json").write_text(json.dumps(cfg))
    assert main(["cv", "--config", str(tmp_path / "cv.json")]) == 0
    rep = json.loads((tmp_path / "cv" / "cv_report.json").read_text())
    assert set(rep) == {"fold1", "fold2", "fold3", "average"}
    assert rep["fold1"]["n"] == 4  # subject S3 only
    f1 = [rep[f"fold{k}"]["au_f1"]["AU12"] for k in (1, 2, 3)]
    assert rep["average"]["au_f1"]["AU12"] == pytest.approx(np.mean(f1))
    md = (tmp_path / "cv" / "cv_report.md").read_text()
    assert "| AU12 |" in md and "average" in md
    # cross-dataset: fold-1 weights evaluated on synthetic shards (a different dataset)
    shards = make_shards(tmp_path / "sh", n=8)
    ev = {"stage": "evaluate", "model": TINY_MODEL, "test_data": {"kind": "shards", "path": str(shards)},
          "evaluate": {"normalizer_weights": str(nor),
                       "classifier_weights": str(tmp_path / "cv" / "fold1" / "classifier.safetensors"),
                       "out_dir": str(tmp_path / "xd"), "tag": "toy_to_synthetic"}}
    (tmp_path / "ev.json").write_text(json.dumps(ev))
    assert main(["evaluate", "--config", str(tmp_path / "ev.json")]) == 0
    m = json.loads((tmp_path / "xd" / "metrics_toy_to_synthetic.json").read_text())
    assert m["n"] == 8 and "AU25" in m["au_f1"] and "emotion_accuracy" in m
    assert (tmp_path / "xd" / "routing_toy_to_synthetic.png").is_file()


def test_aux_loading_errors(tmp_path: Path) -> None:
    from train.auxnets import load_aux, save_aux
    from train.auxnets.nets import AuxConfig, AuxNet

    p = save_aux(AuxNet(AuxConfig("landmarks", img_size=32, width=8, stages=2)), tmp_path / "lm.safetensors")
    net = load_aux(p, kind="landmarks")
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 68, 2)
    assert not any(q.requires_grad for q in net.parameters())
    with pytest.raises(ValueError, match="expected a 'identity' aux net, file holds 'landmarks'"):
        load_aux(p, kind="identity")
    with pytest.raises(ValueError, match=r"must be .safetensors or .onnx"):
        (tmp_path / "x.pt").write_bytes(b"0")
        load_aux(tmp_path / "x.pt")
    import importlib.util

    if importlib.util.find_spec("onnx2torch") is None:
        (tmp_path / "x.onnx").write_bytes(b"0")
        with pytest.raises(ImportError, match="onnx2torch"):
            load_aux(tmp_path / "x.onnx")


def test_mediapipe_alignment_of_a_real_photo(landmarker_path: Path, media_dir: Path, tmp_path: Path) -> None:
    from train.data.build import mediapipe_detector
    from train.data.crops import AlignedDataset, read_rgb
    from train.data.records import Record

    img_path = media_dir / "single_face.jpg"
    if not img_path.is_file():
        pytest.skip(f"test image not found: {img_path}")
    detect = mediapipe_detector(str(landmarker_path))
    pts = detect(read_rgb(img_path))
    assert pts is not None and pts.shape == (5, 2)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # image-left eye / mouth corner first
    assert max(pts[0, 1], pts[1, 1]) < pts[2, 1] < min(pts[3, 1], pts[4, 1])  # eyes, nose, mouth
    cfg = model_config({**TINY_MODEL, "img_size": 64})
    ds = AlignedDataset([Record(key="real/single", image_path=img_path, subject="s", source="media")],
                        cfg, detector=detect)
    crop = ds[0]["image"]
    assert crop.shape == (64, 64, 3) and crop.std() > 20  # a real face, not a black border
    assert detect(np.zeros((64, 64, 3), np.uint8)) is None
    detect.close()


def test_evaluate_model_runs_the_shipped_set_through_the_runtime(tmp_path: Path) -> None:
    # labelled metrics of an exported set must come from the runtime backend and agree with torch
    from norface_rt.preprocess import preprocess
    from norface_rt.weights import load_torch_model
    from train.data.build import build_dataset
    from train.data.sample import collate
    from train.evaluate_model import predict_model_set

    nor, cla = _random_weights(tmp_path)
    cfg_file = tmp_path / "export.json"
    cfg_file.write_text(json.dumps({"stage": "export", "model": TINY_MODEL, "export": {
        "normalizer_weights": str(nor), "classifier_weights": str(cla), "out_dir": str(tmp_path / "set")}}))
    assert main(["export", "--config", str(cfg_file)]) == 0
    shards = make_shards(tmp_path / "sh", n=12, size=32)
    spec = {"kind": "shards", "path": str(shards)}
    p = predict_model_set(tmp_path / "set", spec, batch_size=5)
    assert p["au_prob"].shape == (12, 18) and p["t_emo"].shape == (12,)
    model = load_torch_model(tmp_path / "set")
    ds = build_dataset(spec, model.cfg)
    x = torch.from_numpy(preprocess(collate([ds[i] for i in range(12)])["image"].numpy(), model.cfg))
    with torch.no_grad():
        _, au_prob, au_int, emo = model(x)
    np.testing.assert_allclose(p["au_prob"], au_prob.numpy(), atol=2e-3)
    np.testing.assert_allclose(p["emotion_prob"], emo.numpy(), atol=2e-3)

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"n": 12, "au_f1": {"AU01": 0.25}, "au_f1_mean": 0.25,
                                 "emotion_accuracy": 0.5}))
    test_cfg = tmp_path / "cla.json"
    test_cfg.write_text(json.dumps({"stage": "classifier", "test_data": spec}))
    out = tmp_path / "eval"
    assert main(["evaluate-model", "--model-dir", str(tmp_path / "set"), "--config", str(test_cfg),
                 "--out", str(out), "--compare", f"ablation={other}"]) == 0
    res = json.loads((out / "metrics_model_set.json").read_text())
    assert res["n"] == 12 and "emotion_accuracy" in res
    nm = res["normalization"]
    assert nm["n"] == 12 and nm["mae_to_true"] > 0 and -1 <= nm["expression_correlation"] <= 1
    report = (out / "report_model_set.md").read_text()
    assert "model_set" in report and "ablation" in report and "0.250" in report
    assert "expression correlation" in report
    with pytest.raises(SystemExit, match="NAME=METRICS_JSON"):
        main(["evaluate-model", "--model-dir", str(tmp_path / "set"), "--config", str(test_cfg),
              "--out", str(out), "--compare", "nojson"])


def test_normalization_metrics_separate_transfer_from_the_trivial_target() -> None:
    from train.evaluate_model import normalization_metrics

    rng = np.random.default_rng(0)
    target = rng.integers(60, 200, (8, 8, 3)).astype(np.uint8)
    expr = rng.integers(-40, 40, (10, 8, 8, 3))
    true = np.clip(target[None].astype(int) + expr, 0, 255).astype(np.uint8)
    perfect = normalization_metrics(true, true, target)
    assert perfect["mae_to_true"] == 0 and perfect["expression_correlation"] > 0.999
    constant = normalization_metrics(np.repeat(target[None], 10, 0), true, target)
    assert constant["mae_to_true"] == constant["mae_target_to_true"] > 0
    assert abs(constant["expression_correlation"]) < 1e-6
