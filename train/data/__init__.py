"""Training data: the common sample format, dataset adapters, splits, alignment and shards.

Adapters parse each dataset's official layout into :class:`~train.data.records.Record` lists;
:class:`~train.data.crops.AlignedDataset` turns records into aligned samples, and
:class:`~train.data.shards.ShardDataset` reads synthetic shards in the same sample format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from train.data.records import Record

ADAPTERS = ("bp4d", "bp4d+", "disfa", "affectnet", "rafdb", "folder")


def load_records(name: str, root: str | Path, **kwargs: Any) -> list[Record]:
    """Dispatch to an adapter by dataset name (see docs/datasets.md for each layout)."""
    key = name.lower()
    if key == "bp4d":
        from train.data.bp4d import load_bp4d
        return load_bp4d(root, "BP4D", **kwargs)
    if key in ("bp4d+", "bp4dplus"):
        from train.data.bp4d import load_bp4d
        return load_bp4d(root, "BP4D+", **kwargs)
    if key == "disfa":
        from train.data.disfa import load_disfa
        return load_disfa(root, **kwargs)
    if key == "affectnet":
        from train.data.affectnet import load_affectnet
        return load_affectnet(root, **kwargs)
    if key in ("rafdb", "raf-db"):
        from train.data.rafdb import load_rafdb
        return load_rafdb(root, **kwargs)
    if key == "folder":
        from train.data.folder import load_folder
        return load_folder(root, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; expected one of {ADAPTERS}")


__all__ = ["ADAPTERS", "Record", "load_records"]
