"""Reference MoV implementations: the plain loop oracle and the earlier unfold + einsum kernel.

Both compute exactly what :func:`cover.nn.mov.mixture_of_vectors` computes (docs/method.md §5) and
exist so that tests and ``benchmarks/`` compare the fast kernel against the same code:

* :func:`loop_mov` is the oracle: one Python iteration per window offset, an explicit bounds
  mask and plain autograd. It is slow and stores one shifted copy of the keys per offset.
* :func:`unfold_mov` reads every window from an ``unfold`` view of the padded keys and
  contracts it with ``einsum``, which materialises a ``(B, C, *S, W)`` copy of the windows.

Neither is used on the training path.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812

from cover.nn.mov import window_offsets


def loop_mov(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """Plain oracle: one Python iteration per window offset, explicit bounds mask.

    Args:
        query: ``(B, J*d, *S)`` queries.
        key: ``(B, J*d, *S)`` keys.
        heads: ``J``.
        radius: Window radius ``r``.

    Returns:
        ``(B, ndim, *S)`` displacement in voxels, in the inputs' dtype.
    """
    batch, channels, *spatial = query.shape
    ndim = len(spatial)
    dim = channels // heads
    q = query.reshape(batch, heads, dim, *spatial)
    k = key.reshape(batch, heads, dim, *spatial)
    offsets = window_offsets(radius, ndim, device=query.device).to(query.dtype)
    scores, valid = [], []
    for offset in offsets.long().tolist():
        shifted = torch.zeros_like(k)
        inside = torch.zeros(spatial, dtype=torch.bool, device=query.device)
        dst, src = [], []
        for o, n in zip(offset, spatial, strict=True):
            dst.append(slice(max(0, -o), n - max(0, o)))
            src.append(slice(max(0, o), n - max(0, -o)))
        shifted[(..., *dst)] = k[(..., *src)]
        inside[tuple(dst)] = True
        scores.append((q * shifted).sum(2) / math.sqrt(dim))
        valid.append(inside)
    scores = torch.stack(scores, -1)
    mask = torch.stack(valid, -1)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1)
    vectors = torch.einsum("bj...w,wn->bj...n", weights, offsets)
    return vectors.mean(1).movedim(-1, 1)


def unfold_mov(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """The earlier vectorised kernel: ``unfold`` windows of the padded keys + ``einsum``.

    Args:
        query: ``(B, J*d, *S)`` queries.
        key: ``(B, J*d, *S)`` keys.
        heads: ``J``.
        radius: Window radius ``r``.

    Returns:
        ``(B, ndim, *S)`` displacement in voxels.
    """
    batch, channels, *spatial = query.shape
    ndim = len(spatial)
    dim = channels // heads
    width = 2 * radius + 1
    q = query.reshape(batch, heads, dim, *spatial)
    windows = F.pad(key, [radius] * (2 * ndim))
    ones = F.pad(torch.ones((1, 1, *spatial), device=query.device), [radius] * (2 * ndim))
    for axis in range(ndim):
        windows = windows.unfold(2 + axis, width, 1)
        ones = ones.unfold(2 + axis, width, 1)
    windows = windows.reshape(batch, heads, dim, *spatial, -1)  # (B, J, d, *S, W): einsum copies it
    valid = ones.reshape(*spatial, -1) > 0.5
    scores = torch.einsum("bjd...,bjd...w->bj...w", q, windows) * (1.0 / math.sqrt(dim))
    scores = scores.masked_fill(~valid, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    offsets = window_offsets(radius, ndim, device=query.device).to(weights.dtype)
    return (weights @ offsets).mean(dim=1).movedim(-1, 1)
