"""MoV: Mixture of Vectors, the displacement read off a window of feature similarities (§3.3).

For query features ``q`` (view b) and key features ``k`` (view a), both ``(B, J*d, *S)``,
split into ``J`` heads of ``d`` channels; for every voxel ``p``, head ``j`` and offset ``o`` in
the window ``{-r..r}^ndim``::

    s_j(p, o) = <q_j(p), k_j(p + o)> / sqrt(d)      (offsets outside the image masked out)
    w_j(p, .) = softmax_o s_j(p, .)
    v_j(p)    = sum_o w_j(p, o) o
    u(p)      = mean_j v_j(p)

The vectorised kernel reads every window at once from strided views of the zero-padded keys
(no Python loop over offsets).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def window_offsets(radius: int, spatial_dims: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The window template ``{-r..r}^ndim`` in row-major order.

    Args:
        radius: ``r``.
        spatial_dims: ``ndim``.
        device: Device of the result.

    Returns:
        ``(W, ndim)`` float offsets, ``W = (2r + 1)**ndim``; row ``i`` is the ``i``-th window
        position in C order (last axis fastest).
    """
    axis = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    grids = torch.meshgrid(*([axis] * spatial_dims), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


@lru_cache(maxsize=32)
def _valid_window(spatial: tuple[int, ...], radius: int, device: str) -> torch.Tensor:
    """Bool ``(*S, W)``: whether ``p + o`` is inside the image."""
    ndim = len(spatial)
    ones = torch.ones((1, 1, *spatial), device=device)
    padded = F.pad(ones, [radius] * (2 * ndim))
    windows = _unfold_windows(padded, radius)  # (1, 1, *S, *w)
    return windows.reshape(*spatial, -1)[...] > 0.5


def _unfold_windows(padded: torch.Tensor, radius: int) -> torch.Tensor:
    """Strided view ``(..., *S, *([2r+1] * ndim))`` of every window of a padded tensor."""
    ndim = padded.dim() - 2
    width = 2 * radius + 1
    for axis in range(ndim):
        padded = padded.unfold(2 + axis, width, 1)
    return padded


def mixture_of_vectors(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """Vectorised MoV.

    Args:
        query: ``(B, J*d, *S)`` projected features of view b.
        key: ``(B, J*d, *S)`` projected (and pre-warped) features of view a.
        heads: ``J``.
        radius: Window radius ``r``.

    Returns:
        Displacement ``u`` of shape ``(B, ndim, *S)`` in voxels of this grid.
    """
    batch, channels, *spatial = query.shape
    ndim = len(spatial)
    dim = channels // heads
    if dim * heads != channels:
        raise ValueError(f"{channels} channels do not split into {heads} heads")
    q = query.reshape(batch, heads, dim, *spatial)
    padded = F.pad(key, [radius] * (2 * ndim))
    windows = _unfold_windows(padded, radius)  # (B, C, *S, *w): a view, no copy
    windows = windows.reshape(batch, heads, dim, *spatial, -1)  # (B, J, d, *S, W)
    scores = torch.einsum("bjd...,bjd...w->bj...w", q, windows) * (1.0 / math.sqrt(dim))
    valid = _valid_window(tuple(spatial), radius, str(query.device))
    scores = scores.masked_fill(~valid, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)  # (B, J, *S, W)
    offsets = window_offsets(radius, ndim, device=query.device).to(weights.dtype)  # (W, ndim)
    vectors = (weights @ offsets).mean(dim=1)  # (B, *S, ndim)
    return vectors.movedim(-1, 1)


class MixtureOfVectors(nn.Module):
    """One pyramid level's MoV: a shared 1x1 projection + GroupNorm, then the vector readout.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Channels of the backbone features at this level.
        heads: ``J``.
        head_dim: ``d``.
        radius: Window radius ``r``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, heads: int, head_dim: int = 8, radius: int = 2):
        super().__init__()
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.project = nn.Sequential(conv(in_channels, heads * head_dim, 1), nn.GroupNorm(1, heads * head_dim))
        self.heads = heads
        self.radius = radius

    def forward(self, feat_b: torch.Tensor, feat_a: torch.Tensor) -> torch.Tensor:
        """Displacement from view b's features into view a's.

        Args:
            feat_b: ``(B, C, *S)`` features of view b (queries).
            feat_a: ``(B, C, *S)`` features of view a, already warped by the coarser estimate.

        Returns:
            ``(B, ndim, *S)`` displacement in voxels of this level.
        """
        return mixture_of_vectors(self.project(feat_b), self.project(feat_a), self.heads, self.radius)
