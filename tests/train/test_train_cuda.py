"""Every stage on CUDA with mixed precision: a few steps, finite losses, weights written.

Marked ``gpu``: skipped with the reason where no CUDA device is present (CI has none).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from train.common import read_log

from train_helpers import TINY_MODEL, make_shards, run_section

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


def test_all_stages_run_on_cuda_with_amp(tmp_path: Path) -> None:
    from train import classifier, mae, normalizer

    shards = make_shards(tmp_path / "sh", n=16, size=32)
    data = {"kind": "shards", "path": str(shards)}
    cuda = {"device": "cuda", "amp": True}
    mae_out = mae.run({"model": TINY_MODEL, "data": data, "optim": {"lr": 1e-3},
                       "run": run_section(tmp_path / "mae", 4, **cuda)})
    nor_out = normalizer.run({"model": TINY_MODEL, "data": data,
                              "normalizer": {"target_image": "synthetic",
                                             "init_encoder": str(mae_out / "encoder.safetensors")},
                              "optim": {"lr": 1e-3}, "run": run_section(tmp_path / "nor", 4, **cuda)})
    cla_out = classifier.run({"model": TINY_MODEL, "data": data, "test_data": data,
                              "classifier": {"task": "multi",
                                             "normalizer_weights": str(nor_out / "normalizer.safetensors")},
                              "optim": {"lr": 1e-3}, "run": run_section(tmp_path / "cla", 4, **cuda)})
    for out in (mae_out, nor_out, cla_out):
        rows = read_log(out / "log.csv")
        assert rows and all(math.isfinite(float(r.get("total", r.get("loss", 0.0)))) for r in rows)
