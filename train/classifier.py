"""Stage 3: the classification network F_cla (E_f on I_n and I_o, input / output MoE, heads).

F_nor is frozen; the fixed target identity's tokens are computed once. Loss (paper):
L = L_cla + 0.001 L_imp + 0.001 (L_global + L_local), L_cla = CE (emotion) / BCE (AU occurrence) /
L2 (AU intensity), NaN / -1 masked. ``task`` picks the heads trained and the paper's learning rate:
au_detection 1e-4, au_intensity 1e-3, emotion 2e-5 (multi: 1e-4); 40 epochs.
The importance loss regularises every MoE block; global + local act on the output MoE, whose
routing statistics per label are reported after training.
"""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from norface_rt.config import ModelConfig
from norface_rt.models.moe import MoEOutput, global_loss, importance_loss, local_loss
from norface_rt.models.norface import ClassifierOutput
from norface_rt.models.registry import create_model
from train import losses as L
from train.augment import AugmentConfig, augment_batch
from train.common import (
    MetricLogger,
    RunConfig,
    autocast,
    batch_iterator,
    check_keys,
    load_module_weights,
    maybe_resume,
    model_config,
    resolve_device,
    save_checkpoint,
    save_json,
    seed_everything,
    to_input,
)
from train.data.build import build_dataset
from train.data.sample import images_to_tensor
from train.evaluate import compute_metrics, plot_routing, predict, routing_stats
from train.geometry import GeometryPool, geometry_batch, pool_model_fields
from train.normalizer import load_target_image

TASK_LR = {"au_detection": 1e-4, "au_intensity": 1e-3, "emotion": 2e-5, "multi": 1e-4}
TASK_TARGETS = {"au_detection": ("au_occurrence",), "au_intensity": ("au_intensity",),
                "emotion": ("emotion",), "multi": ("au_occurrence", "au_intensity", "emotion")}
DEFAULTS: dict[str, Any] = {
    "task": "multi", "epochs": None, "normalizer_weights": None, "target_image": "synthetic",
    "init_encoder": None, "init_weights": None, "importance_blocks": ["normalized", "original", "output"],
    "balance_blocks": ["output"], "eval_every": 0, "batch_size_eval": 64,
    "augment": None, "use_normalized": True,
    # geometry input (models whose "model" section sets geometry_inputs): the real neutral pool,
    # the noise added in pool standard deviations, and the loss weight of the geometry-only
    # emotion head (both emotion read-outs are trained; the config picks the one exported)
    "geometry_pool": None, "geometry_noise": 0.5, "geometry_emotion_weight": 1.0,
    "geometry_gain": None,
    # distillation: weight of the teachers' soft emotion labels (samples whose data spec names a
    # teacher table, train/data/teacher_labels.py), matched by the outputs users see (the logits
    # with the config's emotion prior added), on both emotion read-outs
    "teacher_weight": 0.0,
}


def moe_terms(out: ClassifierOutput, importance_blocks: list[str], balance_blocks: list[str]
              ) -> dict[str, torch.Tensor]:
    """Sum of the balance losses over the chosen MoE blocks ("normalized", "original", "output")."""
    blocks: dict[str, MoEOutput] = {"normalized": out.moe_normalized, "original": out.moe_original,
                                    "output": out.moe_output}
    for name in (*importance_blocks, *balance_blocks):
        if name not in blocks:
            raise ValueError(f"MoE block must be one of {sorted(blocks)}, got {name!r}")
    terms: dict[str, torch.Tensor] = {}
    if importance_blocks:
        terms["importance"] = sum(importance_loss(blocks[b]) for b in importance_blocks)  # type: ignore[assignment]
    if balance_blocks:
        terms["global"] = sum(global_loss(blocks[b]) for b in balance_blocks)  # type: ignore[assignment]
        terms["local"] = sum(local_loss(blocks[b]) for b in balance_blocks)  # type: ignore[assignment]
    return terms


def head_outputs(out: ClassifierOutput) -> dict[str, torch.Tensor]:
    return {"au_logits": out.au_logits, "au_intensity": out.au_intensity,
            "emotion_logits": out.emotion_logits}


class ClassifierTrainer:
    def __init__(self, config: dict[str, Any]) -> None:
        check_keys("classifier config", config,
                   {"stage", "model", "data", "test_data", "run", "optim", "classifier", "loss_weights"})
        self.config = config
        self.run_cfg = RunConfig.from_dict(config.get("run"))
        self.run_cfg.apply_threads()
        self.opts = {**DEFAULTS, **config.get("classifier", {})}
        check_keys("classifier", self.opts, set(DEFAULTS))
        self.mcfg: ModelConfig = model_config(pool_model_fields(self.opts["geometry_pool"],
                                                                config.get("model", {})))
        self.pool = GeometryPool(self.opts["geometry_pool"]) if self.mcfg.geometry_dim else None
        task = self.opts["task"]
        if task not in TASK_LR:
            raise ValueError(f"classifier.task must be one of {sorted(TASK_LR)}, got {task!r}")
        seed_everything(self.run_cfg.seed)
        self.device = resolve_device(self.run_cfg.device)
        self.normalizer = create_model("normalizer", self.mcfg).to(self.device).eval()
        if self.opts["normalizer_weights"]:
            load_module_weights(self.normalizer, self.opts["normalizer_weights"])
        for p in self.normalizer.parameters():
            p.requires_grad_(False)
        target = load_target_image(self.opts["target_image"], self.mcfg)
        self.target_image = images_to_tensor(target[None], self.mcfg.mean, self.mcfg.std).to(self.device)
        with torch.no_grad():
            self.target_tokens = self.normalizer.encode_target(self.target_image)
        self.model = create_model("classifier", self.mcfg).to(self.device).train()
        if self.opts["init_encoder"] and self.opts["init_weights"]:
            raise ValueError("classifier: set init_encoder or init_weights, not both (init_weights "
                             "already holds an encoder)")
        if self.opts["init_encoder"]:
            load_module_weights(self.model.encoder, self.opts["init_encoder"])
        if self.opts["init_weights"]:  # continue a finished classifier (e.g. on a new normalizer)
            grown = grow_module_weights(self.model, self.opts["init_weights"])
            if grown:
                print(f"classifier: init_weights grown or new: {grown}")
        o = {"lr": TASK_LR[task], "weight_decay": 0.0, "betas": [0.9, 0.999], **config.get("optim", {})}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]),
                                     weight_decay=float(o["weight_decay"]))
        self.weights = L.ClassificationWeights(**config.get("loss_weights", {}))
        self.targets = TASK_TARGETS[task]
        self.augment = AugmentConfig.from_dict(self.opts["augment"])
        self.aug_gen = torch.Generator().manual_seed(self.run_cfg.seed + 17)
        if not isinstance(self.opts["use_normalized"], bool):
            raise ValueError(f"classifier.use_normalized must be true or false, got "
                             f"{self.opts['use_normalized']!r}")
        self.out = Path(self.run_cfg.out_dir)
        self.log_prior = (torch.log(torch.tensor(self.mcfg.emotion_prior) /
                                    sum(self.mcfg.emotion_prior)).to(self.device)
                          if self.mcfg.emotion_prior else None)
        if float(self.opts["teacher_weight"]) < 0:
            raise ValueError(f"classifier.teacher_weight must be >= 0, got {self.opts['teacher_weight']}")

    def distill(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None:
        """Soft-label cross-entropy to the teachers on the rows that have their labels."""
        if not float(self.opts["teacher_weight"]) or "teacher_emotion" not in batch:
            return None
        rows = batch["has_teacher_emotion"].to(self.device)
        target = batch["teacher_emotion"].to(self.device).float()
        if self.log_prior is not None:
            logits = logits + self.log_prior
        return L.soft_emotion_ce(logits, target, rows)

    def normalize(self, x_o: torch.Tensor) -> torch.Tensor:
        """I_n from the frozen F_nor, or (ablation "w/o I_n") the original face in both branches."""
        if not self.opts["use_normalized"]:
            return x_o
        with torch.no_grad():
            return self.normalizer(x_o, self.target_tokens, self.target_image)

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float], ClassifierOutput]:
        x_o = augment_batch(to_input(batch, "image", self.mcfg, self.device), self.augment,
                            self.mcfg.mean, self.mcfg.std, self.aug_gen)
        x_n = self.normalize(x_o)
        geo = None
        if self.pool is not None:
            gain = self.opts["geometry_gain"]
            geo = geometry_batch(batch, self.pool, random=True, generator=self.aug_gen,
                                 noise=float(self.opts["geometry_noise"]),
                                 gain=None if gain is None else (float(gain[0]), float(gain[1]))
                                 ).to(self.device)
        with autocast(self.device, self.run_cfg.amp):
            out = self.model(x_n, x_o, geo)
        tgt = {k: batch[k].to(self.device) for k in self.targets}
        heads = head_outputs(out)
        heads = {k: v.float() for k, v in heads.items()}
        terms = moe_terms(out, list(self.opts["importance_blocks"]), list(self.opts["balance_blocks"]))
        total, log = L.classification_objective(heads, tgt, terms, self.weights)
        if out.emotion_logits_geometry is not None and "emotion" in tgt:
            # The fused head is in `heads`; the geometry-only read-out is trained beside it.
            other = (out.emotion_logits_fused if self.mcfg.emotion_readout == "geometry"
                     else out.emotion_logits_geometry)
            assert other is not None
            extra = L.emotion_ce(other.float(), tgt["emotion"])
            total = total + float(self.opts["geometry_emotion_weight"]) * extra
            log["emotion_other"] = float(extra.detach())
            log["total"] = float(total.detach())
        kd = self.distill(heads["emotion_logits"], batch)
        if kd is not None:
            tw = float(self.opts["teacher_weight"])
            total = total + tw * kd
            log["teacher"] = float(kd.detach())
            if out.emotion_logits_geometry is not None:
                other_logits = (out.emotion_logits_fused if self.mcfg.emotion_readout == "geometry"
                                else out.emotion_logits_geometry)
                assert other_logits is not None
                kd2 = self.distill(other_logits.float(), batch)
                if kd2 is not None:
                    total = total + tw * float(self.opts["geometry_emotion_weight"]) * kd2
                    log["teacher_other"] = float(kd2.detach())
            log["total"] = float(total.detach())
        return total, log, out

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        total, log, _ = self.loss(batch)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        return log

    def evaluate(self, dataset: Any, tag: str) -> dict[str, Any]:
        self.model.eval()
        try:
            p = predict(self.normalizer if self.opts["use_normalized"] else None, self.target_tokens,
                        self.model, dataset, self.mcfg, int(self.opts["batch_size_eval"]), self.device,
                        target_image=self.target_image, pool=self.pool)
        finally:
            self.model.train()
        res = compute_metrics(p)
        stats = routing_stats(p["gates_output"], p["t_occ"], p["t_emo"])
        save_json(self.out / f"metrics_{tag}.json", res)
        save_json(self.out / f"routing_{tag}.json", stats)
        plot_routing(stats, self.out / f"routing_{tag}.png", f"output MoE routing ({tag})")
        return res

    def run(self, resume: bool | str = True) -> Path:
        rc = self.run_cfg
        state = maybe_resume(self.out, resume, {"classifier": self.model}, {"opt": self.opt})
        dataset = build_dataset(self.config["data"], self.mcfg)
        steps = rc.steps
        if self.opts["epochs"]:
            steps = int(self.opts["epochs"]) * max(1, len(cast(Sized, dataset)) // rc.batch_size)
        test = build_dataset(self.config["test_data"], self.mcfg) if self.config.get("test_data") else None
        batches = batch_iterator(dataset, rc.batch_size, rc.seed, state.step, rc.num_workers)
        logger = MetricLogger(self.out, rc.tensorboard)
        for step in tqdm(range(state.step + 1, steps + 1), disable=not rc.progress, desc="classifier"):
            log = self.step(next(batches))
            state.step = step
            if step % rc.log_every == 0 or step == steps:
                logger.log(step, log)
            if test is not None and self.opts["eval_every"] and step % int(self.opts["eval_every"]) == 0:
                res = self.evaluate(test, f"step{step:08d}")
                logger.log(step, {f"test_{k}": v for k, v in res.items()
                                  if isinstance(v, float) and k.endswith(("mean", "accuracy"))})
            if step % rc.ckpt_every == 0 or step == steps:
                save_checkpoint(self.out, state, {"classifier": self.model}, {"opt": self.opt},
                                self.config, rc.keep_ckpts)
        logger.close()
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(sd, str(self.out / "classifier.safetensors"),
                  metadata={"norface_config": self.mcfg.to_json()})
        if test is not None:
            self.evaluate(test, "test")
        return self.out


def grow_module_weights(module: torch.nn.Module, path: str | Path) -> list[str]:
    """Load a finished classifier into a wider one (a geometry branch added).

    Tensors of equal shape load as they are; a tensor that grew along one axis (the output MoE's
    input, 2d -> 3d) gets the old values in its leading slice and keeps its fresh initialisation
    elsewhere, so the continued model starts as the old one plus a new input. Returns the names
    of grown or newly initialised tensors; anything else that does not fit is an error.
    """
    from train.common import read_weights

    p = path
    old = read_weights(path)
    state = module.state_dict()
    changed: list[str] = []
    with torch.no_grad():
        for name, t in state.items():
            if name not in old:
                changed.append(f"{name} (new)")
                continue
            o = old[name].to(t.dtype)
            if o.shape == t.shape:
                t.copy_(o)
                continue
            diff = [i for i, (a, b) in enumerate(zip(o.shape, t.shape)) if a != b]
            if o.dim() != t.dim() or len(diff) != 1 or o.shape[diff[0]] > t.shape[diff[0]]:
                raise ValueError(f"{p}: {name} has shape {tuple(o.shape)}, cannot grow into "
                                 f"{tuple(t.shape)}")
            t.narrow(diff[0], 0, o.shape[diff[0]]).copy_(o)
            if name.endswith("w_gate"):  # new input rows must not reroute old inputs
                t.narrow(diff[0], o.shape[diff[0]], t.shape[diff[0]] - o.shape[diff[0]]).zero_()
            changed.append(f"{name} (grown {tuple(o.shape)} -> {tuple(t.shape)})")
    unexpected = sorted(set(old) - set(state))
    if unexpected:
        raise ValueError(f"{p}: tensors not in the model: {unexpected[:5]}")
    return changed


def run(config: dict[str, Any], resume: bool | str = True) -> Path:
    return ClassifierTrainer(config).run(resume)

