"""Helpers for the training tests: tiny real image files in the datasets' exact layouts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from train.common import read_log


def write_image(path: Path, h: int = 48, w: int = 48, seed: int = 0) -> Path:
    """A small random JPEG/PNG (a real file, decodable by OpenCV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def face_image(size: int, subject: int, expr: float, seed: int = 0) -> np.ndarray:
    """A structured toy face: skin colour and face width by subject, mouth opening by expression."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 30, np.uint8)
    skin = (120 + 40 * (subject % 3), 90 + 30 * (subject % 2), 80 + 20 * (subject % 4))
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * (0.28 + 0.04 * (subject % 3))), int(size * 0.42)), 0, 0, 360,
                skin, -1)
    for dx in (-1, 1):
        cv2.circle(img, (c + dx * size // 6, int(size * 0.4)), max(1, size // 16), (20, 20, 20), -1)
    cv2.ellipse(img, (c, int(size * 0.72)), (size // 6, max(1, int(size * 0.12 * expr))), 0, 0, 360,
                (150, 40, 40), -1)
    noise = rng.integers(0, 8, size=img.shape, dtype=np.uint8)
    return (img // 2 + noise + img // 2).astype(np.uint8)


def make_shards(directory: Path, n: int = 16, size: int = 32, subjects: int = 4, per_shard: int = 8,
                pairs: bool = True) -> Path:
    """A tiny synthetic shard set in the documented format (what train/synth produces)."""
    import json

    from train.data.sample import au_vector
    from train.data.shards import write_shard

    directory.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        subj = i % subjects
        expr = (i // subjects) % 4 / 3.0
        lm = np.zeros((68, 2), np.float32)
        lm[:17, 0] = np.linspace(0.2, 0.8, 17) * size
        lm[:17, 1] = (0.5 + 0.3 * np.sin(np.linspace(0, np.pi, 17))) * size
        lm[:, 0] *= 1.0 + 0.05 * (subj % 3)
        s = {"image": face_image(size, subj, expr, seed=i),
             "au_occurrence": au_vector({12: float(expr > 0.5), 25: float(expr > 0.1), 1: 0.0}),
             "au_intensity": au_vector({12: 5 * expr, 25: 3 * expr}),
             "emotion": np.int64(1 if expr > 0.5 else 0),
             "landmarks": lm,
             "blendshapes": np.array([expr, 1 - expr, 0.5 * expr, 0.2], np.float32),
             "subject": f"id{subj}", "source": "synthetic", "key": f"syn/{i:05d}"}
        if pairs:
            s["normalized"] = face_image(size, 99, expr, seed=1000 + i)
            s["normalized_landmarks"] = lm
        samples.append(s)
    for k in range(0, n, per_shard):
        write_shard(directory / f"shard-{k // per_shard:05d}.npz", samples[k:k + per_shard])
    (directory / "meta.json").write_text(json.dumps({
        "generator_version": "test", "seed": 0, "label_mapping_version": "test",
        "target_identity": "id99", "counts": {"samples": n}}))
    return directory


TINY_MODEL = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
              "emm_heads": 2, "emm_blocks": 1, "mae_decoder_dim": 32, "mae_decoder_depth": 1,
              "decoder_channels": [32, 16], "moe_hidden": 32}


# ----------------------------------------------------------------------- stage-test helpers

def run_section(out: Path, steps: int, **kw: Any) -> dict[str, Any]:
    return {"out_dir": str(out), "steps": steps, "batch_size": 4, "log_every": kw.pop("log_every", 1),
            "ckpt_every": kw.pop("ckpt_every", 1000), "progress": False, "seed": 3, **kw}


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def resume_matches(run_fn: Any, config: dict[str, Any], tmp: Path, files: list[str]) -> None:
    """Run 3 steps straight (checkpoint at 2 and 3); copy the step-2 checkpoint into a fresh run
    dir and resume: step 3 must give bit-identical weights and the same logged losses."""
    a, b = tmp / "a", tmp / "b"
    run_fn({**config, "run": run_section(a, 3, ckpt_every=2)}, resume=True)
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(a / "checkpoints" / "step-00000002", b / "checkpoints" / "step-00000002")
    run_fn({**config, "run": run_section(b, 3, ckpt_every=2)}, resume=True)
    for f in files:
        assert_same_weights(a / "checkpoints" / "step-00000003" / f, b / "checkpoints" / "step-00000003" / f)
    la, lb = read_log(a / "log.csv"), read_log(b / "log.csv")
    assert la[-1] == lb[-1] and lb[-1]["step"] == 3 and len(lb) == 1


