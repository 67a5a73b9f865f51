"""`python -m train aux --config cfg.json`: train one auxiliary net on data with known truth.

identity     cross-entropy over subject ids (the synthetic engine's identities)
landmarks    MSE on iBUG-68 points (in units of the crop side)
blendshapes  MSE on blendshape weights in [0, 1]
expression   MSE on blendshape weights through the embedding (the embedding is what F_nor uses)
perceptual   cross-entropy over subject ids; its stage feature maps are the perceptual features
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from train.auxnets import save_aux
from train.auxnets.nets import AuxConfig, AuxNet
from train.common import (
    MetricLogger,
    RunConfig,
    batch_iterator,
    check_keys,
    model_config,
    resolve_device,
    seed_everything,
    to_input,
)
from train.data.build import build_dataset

NEEDS = {"identity": "subject", "perceptual": "subject", "landmarks": "landmarks",
         "blendshapes": "blendshapes", "expression": "blendshapes"}


def _subject_ids(dataset: Any) -> dict[str, int]:
    subjects = sorted({str(dataset[i]["subject"]) for i in range(len(dataset))})
    return {s: i for i, s in enumerate(subjects)}


def run(config: dict[str, Any]) -> Path:
    """Train and write ``<out_dir>/<kind>.safetensors``; returns its path."""
    check_keys("aux config", config, {"stage", "aux", "data", "run", "optim", "model"})
    run_cfg = RunConfig.from_dict(config.get("run"))
    run_cfg.apply_threads()
    aux = dict(config.get("aux", {}))
    kind = aux.get("kind")
    if kind not in NEEDS:
        raise ValueError(f"aux.kind must be one of {sorted(NEEDS)}, got {kind!r}")
    seed_everything(run_cfg.seed)
    # the "model" section gives crop size, template and normalisation (shared with the Norface nets)
    mcfg = model_config(config.get("model", {}))
    img_size = mcfg.img_size
    dataset = build_dataset(config["data"], mcfg)
    first = dataset[0]
    need = NEEDS[kind]
    if need not in first:
        raise ValueError(f"aux kind {kind!r} needs samples with {need!r}; data provides {sorted(first)}")
    ids: dict[str, int] = {}
    num_outputs = 0
    names: list[str] = []
    if need == "subject":
        ids = _subject_ids(dataset)
        num_outputs = len(ids)
        if num_outputs < 2:
            raise ValueError(f"aux kind {kind!r} needs at least 2 subjects, data has {num_outputs}")
    elif need == "blendshapes":
        num_outputs = int(first["blendshapes"].shape[0])
        # blendshape names: from the config, else from the shards' meta.json (synthetic engine)
        names = list(aux.get("output_names", []) or getattr(dataset, "meta", {}).get("blendshape_names", []))
        if names and len(names) != num_outputs:
            raise ValueError(f"output_names has {len(names)} names but samples carry {num_outputs} "
                             "blendshapes")
    acfg = AuxConfig(kind=kind, img_size=img_size, width=int(aux.get("width", 32)),
                     stages=int(aux.get("stages", 4)), dim=int(aux.get("dim", 128)),
                     num_outputs=num_outputs, output_names=names)
    device = resolve_device(run_cfg.device)
    net = AuxNet(acfg).to(device).train()
    optim_cfg = dict(config.get("optim", {}))
    opt = torch.optim.AdamW(net.parameters(), lr=float(optim_cfg.get("lr", 1e-3)),
                            weight_decay=float(optim_cfg.get("weight_decay", 1e-4)))
    out = Path(run_cfg.out_dir)
    logger = MetricLogger(out, run_cfg.tensorboard, filename=f"aux_{kind}_log.csv")
    batches = batch_iterator(dataset, run_cfg.batch_size, run_cfg.seed, 0, run_cfg.num_workers)
    for step in tqdm(range(1, run_cfg.steps + 1), disable=not run_cfg.progress, desc=f"aux:{kind}"):
        batch = next(batches)
        x = to_input(batch, "image", mcfg, device)
        pred = net.training_output(x)
        if need == "subject":
            y = torch.tensor([ids[s] for s in batch["subject"]], device=device)
            loss = F.cross_entropy(pred, y)
        elif need == "landmarks":
            loss = F.mse_loss(pred / img_size, batch["landmarks"].to(device).float() / img_size)
        else:
            loss = F.mse_loss(pred, batch["blendshapes"].to(device).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % run_cfg.log_every == 0 or step == run_cfg.steps:
            logger.log(step, {"loss": float(loss.detach())})
    logger.close()
    return save_aux(net.cpu().eval(), out / f"{kind}.safetensors",
                    extra={"trained_steps": str(run_cfg.steps), "num_subjects": str(len(ids))})
