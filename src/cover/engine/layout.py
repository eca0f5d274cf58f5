"""Memory layout of the trained networks: the default (NCHW / NCDHW) or channels-last.

Channels-last (NHWC / NDHWC) stores each pixel's or voxel's channels next to each other. On
the project's AVX-512 CPU oneDNN's convolutions run faster in it while PyTorch's CPU GroupNorm
backward runs slower, so the gain depends on the network and sizes (``benchmarks/RESULTS.md``,
*Channels-last layout*); GPUs were not measured. The U-Net's other
operations (norms, up-sampling, pooling, the VPA) accept either layout. Only the
network's 4D (2D) or 5D (3D) parameters are converted; inputs are converted by the first
convolution. Numbers change only by floating-point rounding (different kernel orders), and
saved weights keep their logical shapes, so a checkpoint loads into either layout.
"""

from __future__ import annotations

import torch
from torch import nn


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """``torch.channels_last`` (2D) or ``torch.channels_last_3d`` (3D).

    Args:
        spatial_dims: 2 or 3.

    Returns:
        The memory format.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def use_channels_last(module: nn.Module, spatial_dims: int) -> nn.Module:
    """Convert a network's convolution weights to channels-last, in place.

    Args:
        module: The network (its ``(C_out, C_in, *kernel)`` weights with ``spatial_dims`` axes
            are converted; other parameters keep their layout).
        spatial_dims: 2 or 3.

    Returns:
        ``module``.
    """
    return module.to(memory_format=channels_last_format(spatial_dims))
