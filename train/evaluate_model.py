"""Labelled evaluation of a shipped model set through the runtime's own backend.

Training reports its metrics on the torch fp32 weights; what users run is the exported model set
(fp16-rounded weights, ONNX graphs, the runtime's preprocessing). This command measures that, on
any labelled data the training adapters read (here: the held-out synthetic identities), and can put
other runs' metrics beside it (ablations) in one markdown table for the model card.

``python -m train evaluate-model --model-dir DIR --config CFG --out DIR [--compare NAME=metrics.json]``
takes the data from CFG's ``test_data`` section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.model_set import read_target_image
from norface_rt.pipeline.factory import open_backend
from train.common import load_config, save_json
from train.data.build import build_dataset
from train.data.sample import collate
from train.evaluate import compute_metrics, markdown_report
from train.geometry import held_out_geometry


def predict_model_set(model_dir: str | Path, data_spec: dict[str, Any], backend: str = "onnxruntime",
                      batch_size: int = 64) -> dict[str, np.ndarray]:
    """Runtime outputs and labels over a dataset, in the layout :func:`compute_metrics` expects."""
    be = open_backend(model_dir, backend)
    try:
        dataset = build_dataset(data_spec, be.config)
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(f"test_data {data_spec.get('path')!r}: no samples")
        out: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, batch_size):
            batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
            geo = (held_out_geometry(batch, be.config.geometry_reference)
                   if be.config.geometry_dim else None)
            r = be.infer(np.ascontiguousarray(batch["image"].numpy()), geometry=geo,
                         want_normalized=True)
            if "normalized" in batch:
                assert r.normalized is not None
                out.setdefault("pred_n", []).append(r.normalized)
                out.setdefault("true_n", []).append(batch["normalized"].numpy())
            for k, v in (("au_prob", r.au_prob), ("au_intensity", r.au_intensity),
                         ("emotion_prob", r.emotion_prob), ("t_occ", batch["au_occurrence"].numpy()),
                         ("t_int", batch["au_intensity"].numpy()), ("t_emo", batch["emotion"].numpy())):
                out.setdefault(k, []).append(np.asarray(v))
        return {k: np.concatenate(v) for k, v in out.items()}
    finally:
        be.close()


def normalization_metrics(pred: np.ndarray, true: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """How well F_nor renders the true I_n (synthetic pairs only), in uint8 grey levels.

    ``mae_to_true`` vs ``mae_target_to_true`` says whether the network beats the trivial answer
    "always the neutral target"; ``expression_correlation`` correlates the per-sample deviations
    from the batch mean (what distinguishes one expression from another) of predicted and true
    I_n: 0 means no expression reaches the output, 1 a perfect transfer."""
    p, t = pred.astype(np.float32), true.astype(np.float32)
    dp, dt = p - p.mean(0, keepdims=True), t - t.mean(0, keepdims=True)
    corr = float((dp * dt).sum() / (np.linalg.norm(dp) * np.linalg.norm(dt) + 1e-9))
    return {"n": int(len(p)), "mae_to_true": float(np.abs(p - t).mean()),
            "mae_target_to_true": float(np.abs(target.astype(np.float32)[None] - t).mean()),
            "expression_correlation": corr}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="model set (config.json + ONNX graphs)")
    p.add_argument("--config", required=True, help="a stage config whose test_data section is evaluated")
    p.add_argument("--out", required=True, help="folder for metrics_<tag>.json and report_<tag>.md")
    p.add_argument("--tag", default="model_set")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--compare", action="append", default=[], metavar="NAME=METRICS_JSON",
                   help="another run's metrics JSON to add as a column (repeatable)")


def run_cli(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    spec = cfg.get("test_data")
    if not isinstance(spec, dict):
        raise SystemExit(f"--config {args.config}: expected a test_data section, got {type(spec).__name__}")
    columns: dict[str, dict[str, Any]] = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--compare expects NAME=METRICS_JSON, got {item!r}")
        columns[name] = json.loads(Path(path).read_text())
    p = predict_model_set(args.model_dir, spec, args.backend, args.batch_size)
    res = compute_metrics(p)
    if "true_n" in p:
        target = read_target_image(args.model_dir, p["true_n"].shape[1])
        if target is None:
            raise SystemExit(f"--model-dir {args.model_dir}: no target.png")
        res["normalization"] = normalization_metrics(p["pred_n"], p["true_n"], target)
    out = Path(args.out)
    save_json(out / f"metrics_{args.tag}.json", res)
    columns = {args.tag: res, **columns}
    report = markdown_report(f"Evaluation: {args.tag}", columns)
    if "normalization" in res:
        nm = res["normalization"]
        report += ("\n## Normalization (true I_n available)\n\n| metric | value |\n|---|---|\n"
                   f"| samples | {nm['n']} |\n"
                   f"| mean abs error to the true I_n (grey levels) | {nm['mae_to_true']:.2f} |\n"
                   f"| same for the neutral target (trivial baseline) | {nm['mae_target_to_true']:.2f} |\n"
                   f"| expression correlation (0 none, 1 perfect) | {nm['expression_correlation']:.3f} |\n")
    (out / f"report_{args.tag}.md").write_text(report)
    print(f"evaluate-model: n={res['n']} au_f1_mean={res.get('au_f1_mean')} "
          f"emotion_accuracy={res.get('emotion_accuracy')} -> {out}")
    return 0
