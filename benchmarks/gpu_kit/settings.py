"""What one kit run measures, in one object handed to every section (a JSON file for the child
processes). The full set is sized to end within 6 minutes on one GPU; the dry run's set is the
smallest that still takes every code path."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BATCHES = (1, 8, 32, 64, 128, 256)
STREAMS = (1, 8, 32)
DRY_BATCHES = (1, 2)
DRY_STREAMS = (1, 2)
# Wall-clock budget of a whole run and each section's share of it (the GPU machine allows one
# run of 6 minutes: 330 s leaves time to copy the results back).
BUDGET_S = 330.0
SHARES = {"environment": 0.1, "tests": 0.34, "model": 0.22, "end_to_end": 0.34}
SECTIONS = tuple(SHARES)


@dataclass
class Settings:
    device: str = "cuda"
    dry_run: bool = False
    inputs: str = ""
    model_dir: str = ""
    out: str = ""
    batches: list[int] = field(default_factory=lambda: list(BATCHES))
    streams: list[int] = field(default_factory=lambda: list(STREAMS))
    # model alone: runs per batch (stops early after max_seconds, at least 3 runs), warm-up runs
    repeats: int = 100
    warmup: int = 5
    max_seconds: float = 2.0
    # end to end: seconds per run (each stream count, paced and unpaced), frames per clip kept
    seconds: float = 8.0
    max_frames: int | None = None
    threads: int | None = None
    budget_s: float = BUDGET_S
    limits: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.limits:
            self.limits = {k: round(self.budget_s * v, 1) for k, v in SHARES.items()}

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @classmethod
    def dry(cls, **kw: Any) -> Settings:
        """The dry run: two batch sizes, two stream counts, short runs, few frames, one CPU
        thread for torch (CI's two cores are shared)."""
        base: dict[str, Any] = dict(dry_run=True, batches=list(DRY_BATCHES),
                                    streams=list(DRY_STREAMS), repeats=3, warmup=1,
                                    max_seconds=1.0, seconds=1.5, max_frames=8, threads=1)
        base.update(kw)
        return cls(**base)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Settings:
        return cls(**json.loads(path.read_text()))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
