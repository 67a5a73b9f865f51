"""Reader for synthetic-data shards written by the synthetic engine (train/synth).

A shard directory holds ``shard-XXXXX.npz`` files, each with arrays keyed like the sample fields
and stacked on axis 0 (strings as numpy unicode arrays), plus ``meta.json`` (generator version,
seed, label mapping version, target identity, counts). Shards are opened lazily and only the last
few are kept in memory, so a dataset far larger than RAM streams from disk.
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from train.data.sample import NUM_AUS, REQUIRED_KEYS, STRING_KEYS

SHARD_GLOB = "shard-*.npz"
IMAGE_KEYS = ("image", "normalized")
POINT_KEYS = ("landmarks", "normalized_landmarks")
FLOAT_KEYS = ("au_occurrence", "au_intensity", "blendshapes", "mp_blendshapes", "mp_neutral")


class ShardError(ValueError):
    """A shard directory or file does not follow the documented format."""


def read_meta(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / "meta.json"
    if not p.is_file():
        raise ShardError(f"shard directory has no meta.json: {p}")
    meta = json.loads(p.read_text())
    if not isinstance(meta, dict):
        raise ShardError(f"{p}: meta.json must hold a JSON object, got {type(meta).__name__}")
    return meta


class ShardDataset(Dataset[dict[str, Any]]):
    """Map-style dataset over all shards of a directory, yielding common-format samples.

    ``img_size``: expected crop side. A shard rendered at another size raises a ShardError unless
    ``resize`` is set, in which case images are resized (area filter) and landmarks scaled, which
    lets tiny test models train on full-size shards.
    """

    def __init__(self, directory: str | Path, img_size: int | None = None, resize: bool = False,
                 keep_open: int = 64) -> None:
        self.dir = Path(directory)
        self.meta = read_meta(self.dir)
        self.files = sorted(self.dir.glob(SHARD_GLOB))
        if not self.files:
            raise ShardError(f"no {SHARD_GLOB} files in {self.dir}")
        self.img_size = img_size
        self.resize = resize
        self.keep_open = max(1, int(keep_open))
        self._open: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self.offsets: list[int] = [0]
        for f in self.files:
            with np.load(f, allow_pickle=False) as z:
                missing = [k for k in REQUIRED_KEYS if k not in z.files]
                if missing:
                    raise ShardError(f"{f}: missing arrays {missing} (has {sorted(z.files)})")
                n = int(z["key"].shape[0])
            self.offsets.append(self.offsets[-1] + n)

    def __len__(self) -> int:
        return self.offsets[-1]

    def has_column(self, key: str) -> bool:
        with np.load(self.files[0], allow_pickle=False) as z:
            return key in z.files

    def column(self, key: str) -> np.ndarray:
        """One array of every shard, concatenated in index order (e.g. for filtering)."""
        parts = []
        for f in self.files:
            with np.load(f, allow_pickle=False) as z:
                if key not in z.files:
                    raise ShardError(f"{f}: no array {key!r} (has {sorted(z.files)})")
                parts.append(np.asarray(z[key]))
        return np.concatenate(parts)

    def subjects(self) -> np.ndarray:
        """Subject id of every sample, in index order (reads only that array of each shard)."""
        parts = []
        for f in self.files:
            with np.load(f, allow_pickle=False) as z:
                parts.append(np.asarray(z["subject"]).astype(str))
        return np.concatenate(parts)

    def _shard(self, i: int) -> dict[str, np.ndarray]:
        if i in self._open:
            self._open.move_to_end(i)
            return self._open[i]
        with np.load(self.files[i], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        n = arrays["key"].shape[0]
        for k, v in arrays.items():
            if v.shape[0] != n:
                raise ShardError(f"{self.files[i]}: array {k!r} has {v.shape[0]} rows, expected {n}")
        for k in ("au_occurrence", "au_intensity"):
            if arrays[k].shape[1:] != (NUM_AUS,):
                raise ShardError(f"{self.files[i]}: {k} must be (N, {NUM_AUS}), got {arrays[k].shape}")
        self._open[i] = arrays
        while len(self._open) > self.keep_open:
            self._open.popitem(last=False)
        return arrays

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        s = bisect.bisect_right(self.offsets, index) - 1
        arrays = self._shard(s)
        row = index - self.offsets[s]
        sample: dict[str, Any] = {}
        for k, v in arrays.items():
            x = v[row]
            if k in STRING_KEYS:
                sample[k] = str(x)
            elif k == "emotion":
                sample[k] = np.int64(x)
            elif k in FLOAT_KEYS or k in POINT_KEYS:
                sample[k] = np.asarray(x, dtype=np.float32)
            else:
                sample[k] = np.asarray(x)
        self._fit_size(sample)
        return sample

    def _fit_size(self, sample: dict[str, Any]) -> None:
        if self.img_size is None:
            return
        side = int(sample["image"].shape[0])
        if side == self.img_size:
            return
        if not self.resize:
            raise ShardError(f"{self.dir}: shard images are {side}x{side}, expected img_size "
                             f"{self.img_size}; regenerate the shards or pass resize=True")
        scale = self.img_size / side
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        for k in IMAGE_KEYS:
            if k in sample:
                sample[k] = cv2.resize(sample[k], (self.img_size, self.img_size), interpolation=interp)
        for k in POINT_KEYS:
            if k in sample:
                # pixel-centre convention: x_new + 0.5 = (x_old + 0.5) * scale
                sample[k] = ((sample[k] + 0.5) * scale - 0.5).astype(np.float32)


def write_shard(path: str | Path, samples: list[dict[str, Any]]) -> None:
    """Write samples as one shard (the same format; used by tests and small tools)."""
    if not samples:
        raise ValueError("write_shard needs at least one sample")
    keys = [k for k in samples[0] if all(k in s for s in samples)]
    arrays: dict[str, np.ndarray] = {}
    for k in keys:
        if k in STRING_KEYS:
            arrays[k] = np.asarray([str(s[k]) for s in samples], dtype=np.str_)
        else:
            arrays[k] = np.stack([np.asarray(s[k]) for s in samples])
    np.savez_compressed(Path(path), **arrays)  # type: ignore[arg-type]
