"""VPA: Vector Pyramid Aggregation, coarse-to-fine composition of MoV fields (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cover.geometry import resize_field, warp
from cover.nn.mov import MixtureOfVectors


class VectorPyramidAggregation(nn.Module):
    """Predict the full-resolution field from two decoder pyramids.

    For levels ``l = 0 … L-1`` (coarse to fine), view a's raw features are warped by the
    current estimate, one MoV gives a residual field that is upsampled to the next level's grid
    (2x per axis, or the stride between the levels, e.g. ``(1, 2, 2)``) and composed with the
    upsampled estimate; the finest level adds a last residual without upsampling. The result
    ``phi`` satisfies ``view_b(p) ≈ view_a(p + phi(p))`` in full-resolution voxels.

    Args:
        spatial_dims: 2 or 3.
        pyramid_channels: Channels of ``F^0 … F^L``.
        heads: Heads ``J`` per level (same length), default ``[4, 4, 4, 1, 1]``.
        head_dim: ``d``.
        radius: MoV window radius ``r``.
        schedule: MoV schedule (``auto``, ``fused``, ``chunked``; :mod:`cover.nn.mov`).
    """

    def __init__(
        self,
        spatial_dims: int,
        pyramid_channels: Sequence[int],
        heads: Sequence[int] = (4, 4, 4, 1, 1),
        head_dim: int = 8,
        radius: int = 2,
        schedule: str = "auto",
    ) -> None:
        super().__init__()
        if len(heads) != len(pyramid_channels):
            raise ValueError(f"{len(heads)} head counts for {len(pyramid_channels)} pyramid levels")
        self.levels = nn.ModuleList(
            MixtureOfVectors(spatial_dims, c, j, head_dim, radius, schedule)
            for c, j in zip(pyramid_channels, heads, strict=True)
        )

    def forward(self, pyramid_a: Sequence[torch.Tensor], pyramid_b: Sequence[torch.Tensor]) -> torch.Tensor:
        """Aggregate the pyramid.

        Args:
            pyramid_a: View a's features, coarse to fine, ``(B, C_l, *S_l)``, each level an
                integer multiple (usually 2x) of the previous one's size per axis.
            pyramid_b: View b's features, same shapes.

        Returns:
            ``(B, ndim, *S_L)`` field at the finest level.
        """
        phi = None
        last = len(self.levels) - 1
        for level, mov in enumerate(self.levels):
            feat_a = pyramid_a[level] if phi is None else warp(pyramid_a[level], phi)
            residual = mov(pyramid_b[level], feat_a)
            if level < last:
                # to the next level's grid: 2x per axis for the U-Nets, the plans' stride for nnU-Net
                finer = pyramid_a[level + 1].shape[2:]
                residual = resize_field(residual, finer)
                phi = residual if phi is None else residual + warp(resize_field(phi, finer), residual)
            else:
                phi = residual if phi is None else residual + warp(phi, residual)
        return phi
