"""The dimension-generic U-Net backbone that returns its decoder pyramid (docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from cover.errors import ConfigError
from cover.geometry import linear_mode

DEFAULT_CHANNELS = (32, 64, 128, 256, 512, 256, 128, 64, 32)
#: Initialisations of :class:`UNet` (``backbone_args: {init: NAME}``).
INITS = ("cover", "authors")


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]


def require_divisible(spatial: Sequence[int], divisor: int, reason: str) -> None:
    """Raise a one-line :class:`ConfigError` unless every spatial size is a multiple of ``divisor``.

    Args:
        spatial: Spatial size of an input.
        divisor: ``2**down-samplings`` of the network.
        reason: Why, for the message (e.g. ``"the U-Net down-samples 4 times"``).
    """
    if any(s % divisor for s in spatial):
        raise ConfigError(
            f"image size {tuple(spatial)} must be divisible by {divisor} on every axis ({reason}); "
            f"pad or crop to a multiple of {divisor}"
        )


class ConvBlock(nn.Sequential):
    """Two 3x3(x3) convolutions, each followed by GroupNorm (C/8 groups) and LeakyReLU(0.2).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        negative_slope: LeakyReLU slope.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, negative_slope: float = 0.2):
        conv = conv_nd(spatial_dims)
        groups = max(1, out_channels // 8)
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
            conv(out_channels, out_channels, 3, padding=1),
            nn.GroupNorm(groups, out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning the decoder pyramid ``F^0 … F^L``, coarse to fine.

    With the default channels the encoder has widths 32, 64, 128, 256, 512 (max-pool down)
    and the decoder 256, 128, 64, 32 ((bi/tri)linear up, skip concatenation). The pyramid is
    the bottleneck followed by every decoder output: 1/16, 1/8, 1/4, 1/2 and full resolution
    with 512, 256, 128, 64 and 32 channels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        channels: Encoder widths followed by decoder widths (odd length ``2L + 1``).
        negative_slope: LeakyReLU slope.
        init: Initialisation of the convolutions (docs/method.md §4): ``cover``: Kaiming-normal
            for the LeakyReLU slope in use (``a = negative_slope``), zero biases; ``authors``: as the
            authors' release, Kaiming-normal with ``a = 0`` (the gain of a plain ReLU) and PyTorch's
            default biases (uniform in ``±1/sqrt(fan_in)``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        negative_slope: float = 0.2,
        init: str = "cover",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if init not in INITS:
            raise ConfigError(f"model.backbone_args.init: {init!r} is not allowed (allowed: {', '.join(INITS)})")
        if len(channels) % 2 == 0 or len(channels) < 3:
            raise ConfigError(f"model.channels needs an odd length >= 3 (encoder + decoder), got {channels}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        depth = len(channels) // 2  # number of down-samplings
        enc, dec = channels[: depth + 1], channels[depth + 1 :]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in enc:
            self.encoder.append(ConvBlock(spatial_dims, previous, width, negative_slope))
            previous = width
        self.decoder = nn.ModuleList()
        for level, width in enumerate(dec):
            skip = enc[depth - 1 - level]
            self.decoder.append(ConvBlock(spatial_dims, previous + skip, width, negative_slope))
            previous = width
        self.pool = (nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 2](2)
        self.pyramid_channels: tuple[int, ...] = (enc[-1], *dec)
        self.divisor = 2**depth
        self.init = init
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                slope = negative_slope if init == "cover" else 0.0
                nn.init.kaiming_normal_(module.weight, a=slope, nonlinearity="leaky_relu")
                if init == "cover":
                    nn.init.zeros_(module.bias)

    def check_size(self, spatial: Sequence[int]) -> None:
        """Raise a clear error when a spatial size is not divisible by ``2**depth``.

        Args:
            spatial: Spatial size of an input.
        """
        require_divisible(spatial, self.divisor, f"the U-Net down-samples {len(self.decoder)} times")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the decoder pyramid.

        Args:
            x: ``(B, in_channels, *spatial)``, every spatial size divisible by 16 (default).

        Returns:
            List of ``L + 1`` tensors ``(B, pyramid_channels[l], *spatial / 2**(L - l))``.
        """
        self.check_size(x.shape[2:])
        skips = []
        for index, block in enumerate(self.encoder):
            if index > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        pyramid = [x]
        mode = linear_mode(self.spatial_dims)
        for level, block in enumerate(self.decoder):
            skip = skips[-2 - level]
            x = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
            pyramid.append(x)
        return pyramid
