"""Shared training machinery: configs, seeding, deterministic batches, checkpoints, logging.

Resumability is exact: a checkpoint stores model weights (safetensors), optimizer state
(``torch.save`` of tensors and numbers only, loadable with ``weights_only=True``), the torch RNG
state and the data position; the batch order is a pure function of (seed, epoch), so step N+1 after
a resume sees the same batch and the same random draws as in an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from norface_rt.config import ModelConfig
from train.data.sample import collate, images_to_tensor

CKPT_RE = re.compile(r"^step-(\d{8})$")


# ----------------------------------------------------------------------------------------- config

def load_config(path: str | Path) -> dict[str, Any]:
    """Read a stage config (.json or .toml) into a dict; relative paths stay as written."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config not found: {p}")
    if p.suffix == ".json":
        d = json.loads(p.read_text())
    elif p.suffix == ".toml":
        d = tomllib.loads(p.read_text())
    else:
        raise ValueError(f"config must be .json or .toml, got {p.suffix!r} ({p})")
    if not isinstance(d, dict):
        raise ValueError(f"{p}: config must be an object/table at top level")
    return d


def model_config(d: Mapping[str, Any]) -> ModelConfig:
    """ModelConfig from a config's "model" section: {"size": "tiny", ...overrides} or full fields."""
    d = dict(d)
    size = d.pop("size", None)
    return ModelConfig.for_size(size, **d) if size else ModelConfig(**d)


@dataclass
class RunConfig:
    """Fields shared by every stage (the "run" section of a config)."""

    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 8
    log_every: int = 10
    ckpt_every: int = 500
    keep_ckpts: int = 3
    device: str = "cpu"
    amp: bool = True  # mixed precision on CUDA only; ignored on CPU
    num_workers: int = 0
    tensorboard: bool = False
    progress: bool = True
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def apply_threads(self) -> None:
        if self.threads > 0:
            torch.set_num_threads(self.threads)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RunConfig:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown run fields {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


def check_keys(section: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"unknown {section} fields {sorted(unknown)}; expected some of {sorted(allowed)}")


# ---------------------------------------------------------------------------------------- seeding

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA when enabled (no GradScaler needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# -------------------------------------------------------------------------------- deterministic data

class EpochBatchSampler(Sampler[list[int]]):
    """Endless batches; epoch e uses permutation default_rng(seed + e). Starts at ``start`` batches.

    Incomplete last batches are dropped so every step has the same batch size (BatchNorm-free
    models don't need it, but it keeps per-step losses comparable).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, shuffle: bool = True) -> None:
        if n < batch_size:
            raise ValueError(f"dataset has {n} samples, fewer than batch_size={batch_size}")
        self.n, self.bs, self.seed, self.start, self.shuffle = n, batch_size, seed, start, shuffle
        self.per_epoch = n // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            epoch, pos = divmod(k, self.per_epoch)
            order = (np.random.default_rng(self.seed + epoch).permutation(self.n) if self.shuffle
                     else np.arange(self.n))
            for b in range(pos, self.per_epoch):
                yield order[b * self.bs:(b + 1) * self.bs].tolist()
            k = (epoch + 1) * self.per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs it for progress bars
        return 2**62


def batch_iterator(dataset: Dataset[Any], batch_size: int, seed: int, start: int = 0,
                   num_workers: int = 0, shuffle: bool = True) -> Iterator[dict[str, Any]]:
    """Endless collated batches in a (seed, start)-determined order."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, start, shuffle)  # type: ignore[arg-type]
    # Own generator: creating the iterator must not consume the global torch RNG, or a resumed
    # run (iterator created after the RNG state is restored) would diverge from a straight one.
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                        persistent_workers=False, timeout=120 if num_workers else 0,
                        generator=torch.Generator().manual_seed(seed + start))
    return iter(loader)


def to_input(batch: Mapping[str, Any], key: str, cfg: ModelConfig, device: torch.device) -> torch.Tensor:
    """uint8 (B,S,S,3) batch field -> normalised (B,3,S,S) float on device (serving's preprocessing)."""
    return images_to_tensor(batch[key].numpy(), cfg.mean, cfg.std).to(device)


# ------------------------------------------------------------------------------------ checkpoints

@dataclass
class TrainState:
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _ckpt_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CKPT_RE.match(p.name))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    dirs = _ckpt_dirs(Path(out_dir) / "checkpoints")
    return dirs[-1] if dirs else None


def save_checkpoint(out_dir: str | Path, state: TrainState, modules: Mapping[str, nn.Module],
                    optimizers: Mapping[str, torch.optim.Optimizer], config: Mapping[str, Any],
                    keep: int = 3) -> Path:
    """Write <out>/checkpoints/step-XXXXXXXX/{<name>.safetensors, optim.pt, rng.pt, state.json}."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"step-{state.step:08d}"
    tmp = root / f".tmp-{state.step:08d}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, m in modules.items():
        sd = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
        save_file(sd, str(tmp / f"{name}.safetensors"))
    torch.save({k: o.state_dict() for k, o in optimizers.items()}, tmp / "optim.pt")
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(
        {"step": state.step, "extra": state.extra, "config": config}, indent=2, default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _ckpt_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def read_weights(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """A safetensors state dict, optionally only the keys under ``prefix`` (stripped).

    ``path`` may carry the prefix itself as ``FILE#PREFIX``, e.g.
    ``norface_rt/assets/model/weights.safetensors#normalizer.`` takes the normalizer out of a
    model set's weights (configs continue a shipped model that way)."""
    text = str(path)
    if "#" in text and not prefix:
        text, prefix = text.split("#", 1)
    p = Path(text)
    if not p.is_file():
        raise FileNotFoundError(f"weights not found: {p}")
    sd = load_file(str(p))
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not sd:
            raise ValueError(f"{p}: no tensors under prefix {prefix!r}")
    return sd


def load_module_weights(module: nn.Module, path: str | Path, strict: bool = True,
                        prefix: str = "") -> None:
    """Load a safetensors state dict (optionally only keys under ``prefix``, or ``FILE#PREFIX``,
    see :func:`read_weights`) into ``module``."""
    p = path
    sd = read_weights(path, prefix)
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f"{p}: state dict mismatch: missing={missing[:5]}, unexpected={unexpected[:5]}")


def load_checkpoint(ckpt: str | Path, modules: Mapping[str, nn.Module],
                    optimizers: Mapping[str, torch.optim.Optimizer]) -> TrainState:
    """Restore weights, optimizer and RNG state written by :func:`save_checkpoint`."""
    d = Path(ckpt)
    if not (d / "state.json").is_file():
        raise FileNotFoundError(f"not a checkpoint directory (no state.json): {d}")
    for name, m in modules.items():
        load_module_weights(m, d / f"{name}.safetensors")
    opt = torch.load(d / "optim.pt", map_location="cpu", weights_only=True)
    for name, o in optimizers.items():
        if name not in opt:
            raise ValueError(f"{d}: optimizer {name!r} not in checkpoint (has {sorted(opt)})")
        o.load_state_dict(opt[name])
    rng = torch.load(d / "rng.pt", map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    meta = json.loads((d / "state.json").read_text())
    return TrainState(step=int(meta["step"]), extra=dict(meta.get("extra", {})))


# ---------------------------------------------------------------------------------------- logging

class MetricLogger:
    """Appends scalar metrics to <out>/log.csv (wide format) and optionally to TensorBoard."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = False, filename: str = "log.csv") -> None:
        self.path = Path(out_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            self.columns = header
        self.tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(out_dir) / "tb"))
            except ImportError:
                self.tb = None  # optional: `pip install tensorboard` to enable

    def log(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows: list[dict[str, str]] = []
            if self.path.is_file() and self.columns:
                with self.path.open(newline="") as fh:
                    old_rows = list(csv.DictReader(fh))
            self.columns = self.columns + new if self.columns else list(row)
            with self.path.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.columns)
                w.writeheader()
                w.writerows(old_rows)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if math.isfinite(float(v)):
                    self.tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: str | Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]


def maybe_resume(out_dir: str | Path, resume: bool | str, modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer]) -> TrainState:
    """Resume from ``resume`` (a checkpoint path) or, if True, from the run's latest checkpoint."""
    if resume is False:
        return TrainState()
    ckpt = Path(resume) if isinstance(resume, str) else latest_checkpoint(out_dir)
    if ckpt is None:
        return TrainState()
    return load_checkpoint(ckpt, modules, optimizers)


def save_json(path: str | Path, obj: Any) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")
    return p
