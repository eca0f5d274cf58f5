"""Downstream networks and their weights: segmentation and classification heads on a backbone.

- :class:`SegmentationNet`: the whole backbone (a pretrained U-Net keeps encoder *and*
  decoder) and a new 1x1(x1) convolution mapping the finest decoder features to classes.
- :class:`ClassificationNet`: global average pooling of the bottleneck features (pyramid
  level 0) and a new linear layer.

Both keep the backbone under the attribute ``backbone``, so their state-dict keys start with
``backbone.`` like the pretraining methods'. :func:`load_pretrained_backbone` reads a
``cover pretrain`` checkpoint (or a run folder, its ``checkpoints/`` folder, a fine-tuned
checkpoint, or a ``cover export`` folder, through :mod:`cover.export`) and returns the
backbone's weights with the plain-JSON metadata; :func:`load_finetuned` rebuilds
a fine-tuned network from its checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError, CoverError
from cover.nn.backbones import build_backbone
from cover.nn.unet import conv_nd
from cover.train.checkpoint import list_checkpoints, load_checkpoint

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
    backbone = build_backbone(
        spec["backbone"], int(spec["spatial_dims"]), int(spec["in_channels"]), **_backbone_kwargs(spec)
    )
    return (SegmentationNet if task == "seg" else ClassificationNet)(backbone, num_classes)


def _backbone_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(spec.get("backbone_args") or {})
    if "channels" in kwargs:
        kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
    return kwargs


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


def load_pretrained_backbone(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Backbone weights and metadata of a pretrained (or fine-tuned) checkpoint or an export.

    Args:
        path: A checkpoint file, a ``cover pretrain`` run folder or its ``checkpoints/``
            folder (the newest valid checkpoint), a fine-tuning output folder (its
            ``best.pt``), or a ``cover export`` folder (``cover.json``).

    Returns:
        ``(backbone_state_dict, metadata, source)``; keys without the ``backbone.`` prefix.
        For an encoder-only export only the encoder's weights are returned and
        ``metadata["encoder_only"]`` is true.
    """
    from cover.export import SIDECAR, backbone_state_dict, encoder_prefixes, load_pretrained, resolve_checkpoint

    source = Path(path)
    if (source.is_dir() and (source / SIDECAR).is_file()) or source.name == SIDECAR:
        backbone, metadata = load_pretrained(source)
        weights = backbone.state_dict()
        if metadata.get("encoder_only"):
            weights = {k: v for k, v in weights.items() if k.startswith(encoder_prefixes(backbone))}
        return weights, dict(metadata), source
    if source.is_dir() and (source / "best.pt").is_file() and not list_checkpoints(source):
        source = source / "best.pt"  # a fine-tuning output folder
    state, source = resolve_checkpoint(source)
    weights = backbone_state_dict(state["model"])
    if not weights:
        raise CoverError(f"pretrained: {source} has no backbone.* weights")
    metadata = dict(state.get("metadata") or {})
    for key in ("backbone", "spatial_dims", "in_channels"):
        if key not in metadata:
            raise CoverError(f"pretrained: {source} lacks metadata '{key}'; not a cover checkpoint")
    return weights, metadata, source


def load_backbone_weights(
    network: nn.Module, weights: dict[str, torch.Tensor], encoder_only: bool, source: Any
) -> None:
    """Copy pretrained weights into ``network.backbone``: strictly, or the encoder only.

    Args:
        network: A downstream network.
        weights: Backbone state dict (from :func:`load_pretrained_backbone`).
        encoder_only: Only the encoder is given; the rest keeps its fresh initialisation.
        source: Where the weights came from (for messages).
    """
    try:
        result = network.backbone.load_state_dict(weights, strict=not encoder_only)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CoverError(f"pretrained: {source} does not fit the backbone ({first})") from None
    if encoder_only and result.unexpected_keys:
        raise CoverError(f"pretrained: {source} has weights the backbone lacks: {result.unexpected_keys[:3]}")


def pretrained_preset(metadata: dict[str, Any]) -> str | None:
    """The intensity preset a pretrained checkpoint was trained with (``None`` if unknown/auto)."""
    preset = metadata.get("preset") or (metadata.get("data") or {}).get("preset")
    return None if preset in (None, "", "auto", "per-file") else str(preset)


def save_finetuned(path: str | Path, network: nn.Module, metadata: dict[str, Any], config: dict[str, Any]) -> None:
    """Write a fine-tuned checkpoint (atomic): weights, plain-JSON metadata and the run config.

    Args:
        path: Destination ``.pt``.
        network: The downstream network.
        metadata: Task, classes, preset, patch size, backbone description (plain JSON).
        config: The resolved fine-tuning config as a plain dict.
    """
    from cover.train.checkpoint import save_checkpoint

    state = {"format": FINETUNE_FORMAT, "model": network.state_dict(), "metadata": metadata, "config": config}
    save_checkpoint(state, path)


def load_finetuned(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a fine-tuned network from its checkpoint alone.

    Args:
        path: A checkpoint written by ``cover finetune`` (or its output folder: ``best.pt``).
        device: Where the network goes.

    Returns:
        ``(network in eval mode, metadata)``.
    """
    source = Path(path)
    if source.is_dir():
        source = source / "best.pt"
    state = load_checkpoint(source)
    if state.get("format") != FINETUNE_FORMAT:
        raise CoverError(f"{source}: not a fine-tuned checkpoint (run cover finetune first)")
    metadata = state["metadata"]
    network = build_network(metadata["task"], metadata, int(metadata["num_classes"]))
    network.load_state_dict(state["model"])
    return network.to(device).eval(), metadata
