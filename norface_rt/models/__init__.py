"""Norface network definitions (PyTorch), shared by training (``train/``) and the runtime.

Construct models only through :func:`create_model` so checkpoints and runtime always agree.
"""

from norface_rt.models.decoder import ConvDecoder
from norface_rt.models.emm import ExpressionMergingModule
from norface_rt.models.moe import MoEOutput, NoisyTopKMoE, global_loss, importance_loss, local_loss
from norface_rt.models.norface import (
    ClassificationNet,
    ClassifierOutput,
    NorfaceModel,
    NormalizationNet,
)
from norface_rt.models.registry import MODEL_REGISTRY, ModelKind, create_model
from norface_rt.models.vit import MAE, Block, PatchEmbed, ViTEncoder, sincos_pos_embed_2d

__all__ = [
    "MAE", "MODEL_REGISTRY", "Block", "ClassificationNet", "ClassifierOutput", "ConvDecoder",
    "ExpressionMergingModule", "ModelKind", "MoEOutput", "NoisyTopKMoE", "NormalizationNet",
    "NorfaceModel", "PatchEmbed", "ViTEncoder", "create_model", "global_loss", "importance_loss",
    "local_loss", "sincos_pos_embed_2d",
]
