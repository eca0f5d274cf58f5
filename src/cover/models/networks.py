"""Networks built from descriptions: the pretraining method module and the downstream task networks.

- :func:`build_model`: backbone + pretraining method (head) of a pretraining config.
- :class:`SegmentationNet`: the whole backbone (a pretrained U-Net keeps encoder *and*
  decoder) and a new 1x1(x1) convolution mapping the finest decoder features to classes.
- :class:`ClassificationNet`: global average pooling of the bottleneck features (pyramid
  level 0) and a new linear layer.

The task networks keep the backbone under the attribute ``backbone``, so their state-dict keys start with
``backbone.`` like the pretraining methods'. Checkpoints become models in
:mod:`cover.models.loading` (pretrained backbones, and fine-tuned networks from
:func:`save_finetuned`'s checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cover.errors import ConfigError
from cover.nn.unet import conv_nd

if TYPE_CHECKING:
    from cover.config import PretrainConfig

FINETUNE_FORMAT = "cover-finetune/1"


class SegmentationNet(nn.Module):
    """Backbone + 1x1(x1) convolution on the finest decoder features.

    Args:
        backbone: A pyramid-returning backbone (see :mod:`cover.nn.backbones`).
        num_classes: Output classes ``K`` (background included).
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = conv_nd(backbone.spatial_dims)(backbone.pyramid_channels[-1], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *spatial)`` of images ``(B, C, *spatial)``."""
        return self.head(self.backbone(x)[-1])


class ClassificationNet(nn.Module):
    """Backbone + linear layer on globally averaged bottleneck features.

    Args:
        backbone: A pyramid-returning backbone.
        num_classes: Output classes ``K``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.pyramid_channels[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of images ``(B, C, *spatial)``."""
        return self.head(self.backbone(x)[0].flatten(2).mean(dim=2))


def freeze_backbone(network: nn.Module, freeze: str) -> None:
    """Stop gradients into the encoder (``encoder``) or the whole backbone (``all``).

    Args:
        network: A downstream network.
        freeze: ``none``, ``encoder`` or ``all``.
    """
    if freeze == "none":
        return
    part = network.backbone
    if freeze == "encoder":
        if not hasattr(part, "encoder"):
            raise ConfigError(f"freeze: the {type(part).__name__} backbone has no 'encoder' to freeze; use all or none")
        part = part.encoder
    for parameter in part.parameters():
        parameter.requires_grad_(False)


def save_finetuned(path: str | Path, network: nn.Module, metadata: dict[str, Any], config: dict[str, Any]) -> None:
    """Write a fine-tuned checkpoint (atomic): weights, plain-JSON metadata and the run config.

    Args:
        path: Destination ``.pt``.
        network: The downstream network.
        metadata: Task, classes, preset, patch size, backbone description (plain JSON).
        config: The resolved fine-tuning config as a plain dict.
    """
    from cover.engine.checkpoint import save_checkpoint

    state = {"format": FINETUNE_FORMAT, "model": network.state_dict(), "metadata": metadata, "config": config}
    save_checkpoint(state, path)


def build_model(config: PretrainConfig) -> torch.nn.Module:
    """The method module (backbone + head) the config describes.

    Args:
        config: A resolved pretraining config.

    Returns:
        The method module, e.g. :class:`cover.methods.cover.CoverMethod` around its backbone.
    """
    from cover.methods import build_method
    from cover.nn.backbones import build_backbone

    backbone = build_backbone(
        config.model.backbone,
        config.dim,
        config.in_channels,
        channels=tuple(config.model.channels),
        **config.model.backbone_args,
    )
    options = {"vec_weight": config.vec_weight, "con_weight": config.con_weight} if config.method == "cover" else {}
    options.update(config.method_options)
    try:
        return build_method(config.method, backbone, config.model, options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        name = str(error).rsplit("argument", 1)[-1].strip(" '")
        raise ConfigError(f"method_options: '{name}' is not an option of method '{config.method}'") from None
