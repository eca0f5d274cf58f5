"""Downstream networks and their weights: segmentation and classification heads on a backbone.

- :class:`SegmentationNet`: the whole backbone (a pretrained U-Net keeps encoder *and*
  decoder) and a new 1x1(x1) convolution mapping the finest decoder features to classes.
- :class:`ClassificationNet`: global average pooling of the bottleneck features (pyramid
  level 0) and a new linear layer.

Both keep the backbone under the attribute ``backbone``, so their state-dict keys start with
``backbone.`` like the pretraining methods'. Checkpoints become models in
:mod:`cover.models.loading` (pretrained backbones, and fine-tuned networks from
:func:`save_finetuned`'s checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError
from cover.models.loading import build_from_metadata
from cover.nn.unet import conv_nd

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


def build_network(task: str, spec: dict[str, Any], num_classes: int) -> nn.Module:
    """Network of a task from a backbone description.

    Args:
        task: ``seg`` or ``cls``.
        spec: ``backbone``, ``backbone_args``, ``spatial_dims``, ``in_channels``.
        num_classes: Output classes.

    Returns:
        :class:`SegmentationNet` or :class:`ClassificationNet`.
    """
    backbone = build_from_metadata(spec)
    return (SegmentationNet if task == "seg" else ClassificationNet)(backbone, num_classes)


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
