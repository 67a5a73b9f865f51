"""`python -m train cv` (k-fold cross-validation) and `python -m train evaluate` (any test set,
e.g. cross-dataset), both writing JSON and markdown reports."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from norface_rt.models.registry import create_model
from train import classifier
from train.common import check_keys, load_module_weights, model_config, save_json
from train.data.build import build_dataset
from train.data.sample import images_to_tensor
from train.data.splits import load_split
from train.evaluate import (
    average_folds,
    compute_metrics,
    markdown_report,
    plot_routing,
    predict,
    routing_stats,
)
from train.normalizer import load_target_image


def _with_fold(spec: Any, fold: int, subset: str) -> Any:
    if isinstance(spec, list):
        return [_with_fold(s, fold, subset) for s in spec]
    spec = dict(spec)
    if spec.get("split_file"):
        spec["fold"] = fold
        spec["subset"] = subset
    return spec


def run_cv(config: dict[str, Any], resume: bool | str = True) -> Path:
    """Train the classifier once per fold (train data's split_file) and average the test metrics."""
    if not config.get("test_data"):
        raise ValueError("cv needs 'test_data' (the same spec as 'data'; its subset becomes 'test')")
    specs = config["data"] if isinstance(config["data"], list) else [config["data"]]
    split_files = {s["split_file"] for s in specs if s.get("split_file")}
    if len(split_files) != 1:
        raise ValueError(f"cv needs exactly one split_file across the data specs, got {sorted(split_files)}")
    n_folds = len(load_split(split_files.pop()).folds)
    root = Path(config.get("run", {}).get("out_dir", "runs/cv"))
    results: dict[str, dict[str, Any]] = {}
    for k in range(1, n_folds + 1):
        c = copy.deepcopy(config)
        c["data"] = _with_fold(config["data"], k, "train")
        c["test_data"] = _with_fold(config["test_data"], k, "test")
        c.setdefault("run", {})["out_dir"] = str(root / f"fold{k}")
        out = classifier.run(c, resume)
        import json
        results[f"fold{k}"] = json.loads((out / "metrics_test.json").read_text())
    results["average"] = average_folds([results[f"fold{k}"] for k in range(1, n_folds + 1)])
    save_json(root / "cv_report.json", results)
    (root / "cv_report.md").write_text(markdown_report(f"{n_folds}-fold cross-validation", results))
    return root


EVAL_KEYS = {"normalizer_weights", "classifier_weights", "target_image", "out_dir", "tag", "batch_size",
             "device"}


def run_evaluate(config: dict[str, Any], resume: bool | str = True) -> Path:
    """Evaluate trained weights on ``test_data`` (cross-dataset: weights from another dataset)."""
    del resume
    check_keys("evaluate config", config, {"stage", "model", "evaluate", "test_data"})
    opts = dict(config.get("evaluate", {}))
    check_keys("evaluate", opts, EVAL_KEYS)
    for k in ("normalizer_weights", "classifier_weights", "out_dir"):
        if not opts.get(k):
            raise ValueError(f"evaluate.{k} is required")
    cfg = model_config(config.get("model", {}))
    device = torch.device(opts.get("device", "cpu"))
    nor = create_model("normalizer", cfg).to(device).eval()
    load_module_weights(nor, opts["normalizer_weights"])
    cla = create_model("classifier", cfg).to(device).eval()
    load_module_weights(cla, opts["classifier_weights"])
    target = load_target_image(opts.get("target_image", "synthetic"), cfg)
    target_image = images_to_tensor(target[None], cfg.mean, cfg.std).to(device)
    with torch.no_grad():
        tokens = nor.encode_target(target_image)
    data = build_dataset(config["test_data"], cfg)
    p = predict(nor, tokens, cla, data, cfg, int(opts.get("batch_size", 64)), device,
                target_image=target_image)
    tag = opts.get("tag", "eval")
    out = Path(opts["out_dir"])
    res = compute_metrics(p)
    stats = routing_stats(p["gates_output"], p["t_occ"], p["t_emo"])
    save_json(out / f"metrics_{tag}.json", res)
    save_json(out / f"routing_{tag}.json", stats)
    plot_routing(stats, out / f"routing_{tag}.png", f"output MoE routing ({tag})")
    (out / f"report_{tag}.md").write_text(markdown_report(f"Evaluation: {tag}", {tag: res}))
    return out
