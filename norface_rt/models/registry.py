"""The single factory through which training and runtime construct networks.

Keeping construction in one place means a checkpoint written by ``train/`` always matches the module
tree the runtime builds for the same :class:`~norface_rt.config.ModelConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, overload

from torch import nn

from norface_rt.config import ModelConfig
from norface_rt.models.norface import ClassificationNet, NorfaceModel, NormalizationNet
from norface_rt.models.vit import MAE

ModelKind = Literal["mae", "normalizer", "classifier", "norface"]

# Read-only on purpose: no module-level mutable state; extend by editing this table.
MODEL_REGISTRY: Mapping[str, Callable[..., nn.Module]] = MappingProxyType({
    "mae": MAE,
    "normalizer": NormalizationNet,
    "classifier": ClassificationNet,
    "norface": NorfaceModel,
})


@overload
def create_model(kind: Literal["mae"], cfg: ModelConfig, **kwargs: Any) -> MAE: ...
@overload
def create_model(kind: Literal["normalizer"], cfg: ModelConfig, **kwargs: Any) -> NormalizationNet: ...
@overload
def create_model(kind: Literal["classifier"], cfg: ModelConfig, **kwargs: Any) -> ClassificationNet: ...
@overload
def create_model(kind: Literal["norface"], cfg: ModelConfig, **kwargs: Any) -> NorfaceModel: ...
@overload
def create_model(kind: str, cfg: ModelConfig, **kwargs: Any) -> nn.Module: ...


def create_model(kind: str, cfg: ModelConfig, **kwargs: Any) -> nn.Module:
    """Build a network of ``kind`` from ``cfg``; extra kwargs go to its constructor
    (e.g. ``norm_pix_loss=False`` for "mae")."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"cfg: expected ModelConfig, got {type(cfg).__name__}")
    try:
        factory = MODEL_REGISTRY[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {sorted(MODEL_REGISTRY)}, got {kind!r}") from None
    return factory(cfg, **kwargs)
