"""Stage 1: MAE pre-training of the ViT encoder on aligned faces (mask ratio 0.75).

The pre-trained encoder (``<out>/encoder.safetensors``) initialises E_s of the normalizer and E_f
of the classifier ("init_encoder" in their configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from norface_rt.models.registry import create_model
from train.common import (
    MetricLogger,
    RunConfig,
    autocast,
    batch_iterator,
    check_keys,
    maybe_resume,
    model_config,
    resolve_device,
    save_checkpoint,
    seed_everything,
    to_input,
)
from train.data.build import build_dataset

DEFAULT_OPTIM = {"lr": 1.5e-4, "betas": [0.9, 0.95], "weight_decay": 0.05}


def run(config: dict[str, Any], resume: bool | str = True) -> Path:
    check_keys("mae config", config, {"stage", "model", "data", "run", "optim", "mae"})
    run_cfg = RunConfig.from_dict(config.get("run"))
    run_cfg.apply_threads()
    mcfg = model_config(config.get("model", {}))
    seed_everything(run_cfg.seed)
    device = resolve_device(run_cfg.device)
    model = create_model("mae", mcfg, norm_pix_loss=bool(config.get("mae", {}).get("norm_pix_loss", True)))
    model.to(device).train()
    o = {**DEFAULT_OPTIM, **config.get("optim", {})}
    opt = torch.optim.AdamW(model.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]),
                            weight_decay=float(o["weight_decay"]))
    out = Path(run_cfg.out_dir)
    state = maybe_resume(out, resume, {"mae": model}, {"mae": opt})
    dataset = build_dataset(config["data"], mcfg)
    batches = batch_iterator(dataset, run_cfg.batch_size, run_cfg.seed, state.step, run_cfg.num_workers)
    logger = MetricLogger(out, run_cfg.tensorboard)
    bar = tqdm(range(state.step + 1, run_cfg.steps + 1), disable=not run_cfg.progress, desc="mae")
    for step in bar:
        x = to_input(next(batches), "image", mcfg, device)
        with autocast(device, run_cfg.amp):
            loss, _, _ = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state.step = step
        if step % run_cfg.log_every == 0 or step == run_cfg.steps:
            logger.log(step, {"loss": float(loss.detach())})
        if step % run_cfg.ckpt_every == 0 or step == run_cfg.steps:
            save_checkpoint(out, state, {"mae": model}, {"mae": opt}, config, run_cfg.keep_ckpts)
    logger.close()
    enc = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
    save_file(enc, str(out / "encoder.safetensors"), metadata={"norface_config": mcfg.to_json()})
    return out
