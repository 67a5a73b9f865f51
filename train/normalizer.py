"""Stage 2: the normalization network F_nor (E_s + EMM + decoder), adversarially trained.

Per step (paper, Sec. 3): I_o and I_t are drawn independently from the data; with probability
``p_same`` a row uses I_t = I_o and is then supervised by L_rec and L_perc (I_n must reproduce the
input). Identity (I_t vs I_n), contour landmarks (I_t vs I_n), expression and eyebrow (I_o vs I_n)
terms come from frozen auxiliary nets; any aux net not configured drops its term. Synthetic
shards that carry the true I_n add L_pair for rows whose I_t is the shard's target identity.
Optimiser: Adam(beta1=0, beta2=0.99), lr 1e-4, batch 8, for both F_nor and the discriminator.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from norface_rt.export.untrained import load_target_image  # noqa: F401  (train's callers import it from here)
from norface_rt.models.registry import create_model
from train import losses as L
from train.augment import AugmentConfig, augment_batch
from train.auxnets import aux_info, load_aux
from train.auxnets.nets import AuxConfig, AuxNet
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
    seed_everything,
    to_input,
)
from train.data.build import build_dataset
from train.data.sample import images_to_tensor

DEFAULT_OPTIM = {"lr": 1e-4, "betas": [0.0, 0.99]}
DEFAULTS = {"p_same": 0.2, "pair_prob": 0.5, "target_image": None, "init_encoder": None,
            "disc_width": 32, "eyebrow_channels": None, "augment": None,
            "pair_expression_weight": 0.0}
AUX_TERMS = ("identity", "landmarks", "expression", "blendshapes", "perceptual")
T_STREAM_SEED_OFFSET = 1_000_003  # I_t batches: independent of, but as random as, I_o batches


def disc_stages(img_size: int) -> int:
    """As many stride-2 stages as keep at least a 4x4 patch grid (max 4)."""
    return max(1, min(4, int(math.log2(img_size // 4))))


class NormalizerLosses(nn.Module):
    """Computes every F_nor term for one batch; holds the frozen aux nets."""

    def __init__(self, aux_paths: dict[str, str | None], weights: L.NormalizerWeights,
                 eyebrow_channels: list[int] | None, img_size: int,
                 pair_expression_weight: float = 0.0) -> None:
        super().__init__()
        self.weights = weights
        self.pair_expression_weight = float(pair_expression_weight)
        self.img_size = img_size
        self.nets = nn.ModuleDict()
        for kind in AUX_TERMS:
            p = aux_paths.get(kind)
            if p:
                self.nets[kind] = load_aux(p, kind=kind if str(p).endswith(".safetensors") else None)
        self.eyebrow = eyebrow_channels
        bp = aux_paths.get("blendshapes")
        if "blendshapes" in self.nets and self.eyebrow is None:
            names = aux_info(bp).get("output_names", []) if bp and str(bp).endswith(".safetensors") else []
            self.eyebrow = L.eyebrow_channels(names) if names else None
            if self.eyebrow is None:
                raise ValueError("blendshapes aux net has no output_names; set normalizer.eyebrow_channels")

    def generator_terms(self, x_o: torch.Tensor, x_t: torch.Tensor, x_n: torch.Tensor,
                        same: torch.Tensor, d_fake: torch.Tensor, true_n: torch.Tensor | None,
                        pair: torch.Tensor | None) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {"adv": L.hinge_g_loss(d_fake),
                                      "rec": L.reconstruction_loss(x_n, x_o, same)}
        if "perceptual" in self.nets:
            if bool(same.any()):
                t["perc"] = L.perceptual_loss(self.nets["perceptual"], x_n[same], x_o[same])
            else:
                t["perc"] = x_n.sum() * 0.0
        if "identity" in self.nets:
            t["id"] = L.identity_loss(self.nets["identity"](x_t), self.nets["identity"](x_n))
        if "landmarks" in self.nets:
            t["lm"] = L.landmark_loss(self.nets["landmarks"](x_t), self.nets["landmarks"](x_n),
                                      scale=float(self.img_size))
        if "expression" in self.nets:
            t["exp"] = L.expression_loss(self.nets["expression"](x_o), self.nets["expression"](x_n))
        if "blendshapes" in self.nets and self.eyebrow:
            t["eye"] = L.eyebrow_loss(self.nets["blendshapes"](x_o), self.nets["blendshapes"](x_n),
                                      self.eyebrow)
        if true_n is not None and pair is not None:
            t["pair"] = L.pair_loss(x_n, true_n, pair, reference=x_t,
                                    expression_weight=self.pair_expression_weight)
        return t


class NormalizerTrainer:
    """Holds everything of the stage so tests can run single steps and compare states."""

    def __init__(self, config: dict[str, Any]) -> None:
        check_keys("normalizer config", config,
                   {"stage", "model", "data", "run", "optim", "normalizer", "aux", "loss_weights"})
        self.config = config
        self.run_cfg = RunConfig.from_dict(config.get("run"))
        self.run_cfg.apply_threads()
        self.mcfg = model_config(config.get("model", {}))
        self.opts = {**DEFAULTS, **config.get("normalizer", {})}
        check_keys("normalizer", self.opts, set(DEFAULTS))
        seed_everything(self.run_cfg.seed)
        self.device = resolve_device(self.run_cfg.device)
        self.G = create_model("normalizer", self.mcfg).to(self.device).train()
        if self.opts["init_encoder"]:
            load_module_weights(self.G.encoder, self.opts["init_encoder"])
        self.D = AuxNet(AuxConfig("discriminator", img_size=self.mcfg.img_size,
                                  width=int(self.opts["disc_width"]),
                                  stages=disc_stages(self.mcfg.img_size),
                                  in_channels=2 * self.mcfg.in_chans)).to(self.device).train()
        self.weights = L.NormalizerWeights(**config.get("loss_weights", {}))
        if float(self.opts["pair_expression_weight"]) < 0:
            raise ValueError(f"normalizer.pair_expression_weight must be >= 0, got "
                             f"{self.opts['pair_expression_weight']}")
        self.losses = NormalizerLosses(dict(config.get("aux", {})), self.weights,
                                       self.opts["eyebrow_channels"], self.mcfg.img_size,
                                       float(self.opts["pair_expression_weight"])).to(self.device)
        o = {**DEFAULT_OPTIM, **config.get("optim", {})}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=float(o["lr"]), betas=tuple(o["betas"]))
        target = (load_target_image(self.opts["target_image"], self.mcfg)
                  if self.opts["target_image"] else None)
        self.target = (images_to_tensor(target[None], self.mcfg.mean, self.mcfg.std).to(self.device)
                       if target is not None else None)
        self.augment = AugmentConfig.from_dict(self.opts["augment"])
        if self.augment.flip_prob:
            raise ValueError("normalizer.augment.flip_prob must be 0: a flipped I_o no longer matches "
                             f"its true I_n, got {self.augment.flip_prob}")
        self.aug_gen = torch.Generator().manual_seed(self.run_cfg.seed + 17)
        self.out = Path(self.run_cfg.out_dir)

    @property
    def use_disc(self) -> bool:
        """The CPU recipe turns the adversarial term off; then the discriminator is not run at all."""
        return self.weights.adv > 0

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"normalizer": self.G, "discriminator": self.D}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def step(self, batch_o: dict[str, Any], batch_t: dict[str, Any]) -> dict[str, float]:
        cfg, dev = self.mcfg, self.device
        # Only I_o is jittered: F_nor must output the canonical target framing whatever the crop.
        x_o = augment_batch(to_input(batch_o, "image", cfg, dev), self.augment, cfg.mean, cfg.std,
                            self.aug_gen)
        x_t = to_input(batch_t, "image", cfg, dev)
        b = x_o.shape[0]
        same = torch.rand(b, device=dev) < float(self.opts["p_same"])
        x_t = torch.where(same.view(-1, 1, 1, 1), x_o, x_t)
        pair = true_n = None
        if self.target is not None and "normalized" in batch_o:
            pair = (batch_o["has_normalized"].to(dev) & ~same
                    & (torch.rand(b, device=dev) < float(self.opts["pair_prob"])))
            x_t = torch.where(pair.view(-1, 1, 1, 1), self.target.expand_as(x_t), x_t)
            true_n = to_input(batch_o, "normalized", cfg, dev)
        amp = self.run_cfg.amp
        with autocast(dev, amp):
            x_n = self.G(x_o, self.G.encode_target(x_t), x_t)
            # Conditional discriminator on the pair [I_t, I_n]: is the second image a real face of
            # I_t's identity, pose and background? Real pairs are [I_t, true I_n] where synthetic
            # data has one, else [I_t, I_t] (the only real image of that identity/pose/background).
            real_second = (x_t if true_n is None or pair is None
                           else torch.where(pair.view(-1, 1, 1, 1), true_n, x_t))
            if self.use_disc:
                d_loss = L.hinge_d_loss(self.D(torch.cat([x_t, real_second], 1)),
                                        self.D(torch.cat([x_t, x_n.detach()], 1)))
        if self.use_disc:
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        with autocast(dev, amp):
            d_fake = self.D(torch.cat([x_t, x_n], 1)) if self.use_disc else x_n.new_zeros(b, 1)
            terms = self.losses.generator_terms(x_o, x_t, x_n, same, d_fake, true_n, pair)
            total, log = L.normalizer_objective(terms, self.weights)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        log["d"] = float(d_loss.detach()) if self.use_disc else 0.0
        log["p_same_batch"] = float(same.float().mean())
        return log

    def run(self, resume: bool | str = True) -> Path:
        rc = self.run_cfg
        state = maybe_resume(self.out, resume, self.modules, self.optimizers)
        dataset = build_dataset(self.config["data"], self.mcfg)
        stream_o = batch_iterator(dataset, rc.batch_size, rc.seed, state.step, rc.num_workers)
        stream_t = batch_iterator(dataset, rc.batch_size, rc.seed + T_STREAM_SEED_OFFSET, state.step,
                                  rc.num_workers)
        logger = MetricLogger(self.out, rc.tensorboard)
        for step in tqdm(range(state.step + 1, rc.steps + 1), disable=not rc.progress, desc="normalizer"):
            log = self.step(next(stream_o), next(stream_t))
            state.step = step
            if step % rc.log_every == 0 or step == rc.steps:
                logger.log(step, log)
            if step % rc.ckpt_every == 0 or step == rc.steps:
                save_checkpoint(self.out, state, self.modules, self.optimizers, self.config, rc.keep_ckpts)
        logger.close()
        sd = {k: v.detach().cpu().contiguous() for k, v in self.G.state_dict().items()}
        save_file(sd, str(self.out / "normalizer.safetensors"),
                  metadata={"norface_config": self.mcfg.to_json()})
        return self.out


def run(config: dict[str, Any], resume: bool | str = True) -> Path:
    return NormalizerTrainer(config).run(resume)
