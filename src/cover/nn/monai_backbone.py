"""MONAI ``BasicUNet`` as a COVER backbone (``--backbone monai-basicunet``).

:class:`BasicUNetPyramid` *is* a :class:`monai.networks.nets.BasicUNet` (a subclass with the
same modules and the same ``state_dict`` keys) whose ``forward`` returns the decoder pyramid
instead of logits: the bottleneck ``down_4`` (1/16) followed by the outputs of ``upcat_4``,
``upcat_3``, ``upcat_2`` and ``upcat_1`` (1/8 … full resolution). Its submodules run in the
order of ``BasicUNet.forward``, so the features equal those of a plain ``BasicUNet`` with the
same weights.

COVER does not train ``final_conv`` (the 1x1 convolution to ``out_channels``; the pyramid
ends before it). It is frozen (``requires_grad=False``) at its MONAI initialisation, which is
seeded by the run seed, and exported as is, so that the weights load into a plain
``BasicUNet(spatial_dims, in_channels, out_channels, features)`` with ``strict=True``. A
fine-tuning script re-initialises or simply trains it like any new segmentation head.

Widths come from ``model.channels`` (9 numbers, encoder then decoder, as for the built-in
U-Net). ``BasicUNet``'s decoder mirrors its encoder, so the channels must read
``[e0, e1, e2, e3, e4, e3, e2, e1, d]``, giving ``features = (e0, e1, e2, e3, e4, d)``; the
default channels ``(32, 64, 128, 256, 512, 256, 128, 64, 32)`` give ``features =
(32, 64, 128, 256, 512, 32)``. Other ``BasicUNet`` arguments (``out_channels``, ``act``,
``norm``, ``bias``, ``dropout``, ``upsample``) go in ``model.backbone_args``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from cover.errors import ConfigError
from cover.nn.unet import require_divisible

BASIC_UNET_ARGS = ("out_channels", "act", "norm", "bias", "dropout", "upsample")


def features_from_channels(channels: Sequence[int]) -> tuple[int, ...]:
    """Map cover's encoder+decoder widths to ``BasicUNet``'s six ``features``.

    Args:
        channels: ``[e0, e1, e2, e3, e4, e3, e2, e1, d]``.

    Returns:
        ``(e0, e1, e2, e3, e4, d)``.
    """
    channels = tuple(int(c) for c in channels)
    if len(channels) != 9 or channels[5:8] != (channels[3], channels[2], channels[1]):
        raise ConfigError(
            f"model.channels {list(channels)} does not describe a monai BasicUNet: it needs 9 widths "
            "[e0, e1, e2, e3, e4, e3, e2, e1, d] (4 down-samplings, decoder mirroring the encoder), "
            "e.g. [32, 64, 128, 256, 512, 256, 128, 64, 32]"
        )
    return (*channels[:5], channels[8])


class BasicUNetPyramid(BasicUNet):
    """``BasicUNet`` returning its decoder pyramid ``F^0 … F^4``, coarse to fine.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        features: ``BasicUNet``'s six widths ``(e0, e1, e2, e3, e4, d)``.
        out_channels: Channels of the (untrained, frozen) ``final_conv``.
        **kwargs: Other ``BasicUNet`` arguments (``act``, ``norm``, ``bias``, ``dropout``,
            ``upsample``).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        pyramid_channels: ``(e4, e3, e2, e1, d)``.
        divisor: 16: inputs must be divisible by it.
        monai_args: Keyword arguments that rebuild the plain ``BasicUNet``.
    """

    encoder_prefixes = ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4.")

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        features: Sequence[int] = (32, 64, 128, 256, 512, 32),
        out_channels: int = 2,
        **kwargs: Any,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        unknown = sorted(set(kwargs) - set(BASIC_UNET_ARGS))
        if unknown:
            raise ConfigError(
                f"model.backbone_args: {', '.join(unknown)} not accepted by monai-basicunet "
                f"(allowed: {', '.join(BASIC_UNET_ARGS)}; widths come from model.channels)"
            )
        features = tuple(int(f) for f in features)
        if len(features) != 6:
            raise ConfigError(f"BasicUNet features need 6 values, got {list(features)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        super().__init__(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=features, **kwargs
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.features = features
        self.pyramid_channels: tuple[int, ...] = (features[4], features[3], features[2], features[1], features[5])
        self.divisor = 16
        self.monai_args: dict[str, Any] = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": list(features),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
        }
        self._instance_norm = "instance" in str(kwargs.get("norm", "instance")).lower()
        self.final_conv.requires_grad_(False)

    @property
    def encoder(self) -> nn.ModuleList:
        """The encoder blocks ``conv_0, down_1 … down_4`` (a view; for freezing or inspection)."""
        return nn.ModuleList([self.conv_0, self.down_1, self.down_2, self.down_3, self.down_4])

    def check_size(self, spatial: Sequence[int]) -> None:
        """Raise a clear error when a spatial size does not fit 4 down-samplings.

        Args:
            spatial: Spatial size of an input.
        """
        require_divisible(spatial, self.divisor, "BasicUNet down-samples 4 times")
        if self._instance_norm and min(spatial) < 2 * self.divisor:
            raise ConfigError(
                f"image size {tuple(spatial)} is too small for BasicUNet with instance norm: every axis "
                "needs at least 32 voxels (the 1/16 bottleneck must hold more than one voxel)"
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the decoder pyramid.

        Args:
            x: ``(B, in_channels, *spatial)``, every spatial size divisible by 16.

        Returns:
            ``[x4, u4, u3, u2, u1]``: ``(B, pyramid_channels[l], *spatial / 2**(4 - l))``.
        """
        self.check_size(x.shape[2:])
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return [x4, u4, u3, u2, u1]


def build_basic_unet_pyramid(
    spatial_dims: int, in_channels: int, channels: Sequence[int], **backbone_args: Any
) -> BasicUNetPyramid:
    """Registry factory: widths from ``model.channels``, other arguments from ``model.backbone_args``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        channels: ``[e0, e1, e2, e3, e4, e3, e2, e1, d]``.
        **backbone_args: ``out_channels``, ``act``, ``norm``, ``bias``, ``dropout``, ``upsample``.

    Returns:
        The backbone.
    """
    if "features" in backbone_args:
        expected = list(features_from_channels(channels))
        if [int(f) for f in backbone_args.pop("features")] != expected:
            raise ConfigError(
                "model.backbone_args.features: give the widths as model.channels "
                "[e0, e1, e2, e3, e4, e3, e2, e1, d] instead"
            )
    return BasicUNetPyramid(spatial_dims, in_channels, features_from_channels(channels), **backbone_args)
