"""Backbone registry: every backbone maps ``(B, C_in, *S)`` to a coarse-to-fine decoder pyramid.

A backbone is an ``nn.Module`` whose ``forward`` returns a list of feature maps, coarsest
first, each level twice the previous one's size, the last at full resolution, and which has
the attributes ``spatial_dims``, ``in_channels``, ``pyramid_channels`` and ``divisor`` (inputs
must be divisible by it) and a ``check_size(spatial)`` method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cover.errors import ConfigError
from cover.nn.unet import UNet

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a backbone factory to the registry under ``name``."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = factory
        return factory

    return add


@register_backbone("unet")
def _unet(spatial_dims: int, in_channels: int, channels: tuple[int, ...], init: str = "cover", **_: Any) -> nn.Module:
    return UNet(spatial_dims, in_channels, channels, init=init)


@register_backbone("monai-basicunet")
def _monai_basic_unet(spatial_dims: int, in_channels: int, channels: tuple[int, ...], **kwargs: Any) -> nn.Module:
    from cover.nn.monai_backbone import build_basic_unet_pyramid  # imports MONAI only when used

    return build_basic_unet_pyramid(spatial_dims, in_channels, channels, **kwargs)


@register_backbone("nnunet")
def _nnunet(spatial_dims: int, in_channels: int, channels: tuple[int, ...] = (), **kwargs: Any) -> nn.Module:
    from cover.nn.nnunet_backbone import build_nnunet_pyramid  # imports nnU-Net only when used

    return build_nnunet_pyramid(spatial_dims, in_channels, channels, **kwargs)


def build_backbone(name: str, spatial_dims: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: Registry name (``"unet"``, ``"monai-basicunet"``, ``"nnunet"``, ...).
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        **kwargs: Backbone arguments (``channels``; ``model.backbone_args`` such as
            ``out_channels`` or ``norm`` for ``monai-basicunet``; ``plans`` and ``configuration``
            for ``nnunet``).

    Returns:
        The backbone module.
    """
    if name not in BACKBONES:
        raise ConfigError(f"model.backbone '{name}' is unknown (allowed: {', '.join(sorted(BACKBONES))})")
    return BACKBONES[name](spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
