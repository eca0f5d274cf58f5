"""Collapse statistics of pixel features: are the finest features still spread over many directions?

A pixel-wise objective can be minimised by a trivial solution in which every pixel's feature
points in (nearly) the same direction ("collapse"): the features then carry little information
for segmentation, whatever the loss says. Two cheap statistics on a feature map expose it:

* ``pair_cos``: the mean cosine similarity of random pixel pairs (two pixels drawn uniformly
  from the whole batch). Near 1: every pixel points the same way. An untrained U-Net's
  finest features (LeakyReLU after GroupNorm, mostly positive) give about 0.8; a collapsed map
  above 0.95.
* ``eff_rank``: the effective rank of the covariance of the pixel features,
  ``exp(H(lambda / sum(lambda)))`` with ``lambda`` the covariance's eigenvalues and ``H`` the
  Shannon entropy (Roy & Vetterli 2007); between 1 (all variance along one direction) and
  ``C`` (equal variance in every direction). It does not depend on the features' overall
  scale; a map pointing one way with only noise around it can still have a high effective
  rank (of the noise), which ``pair_cos`` catches.

:data:`COLLAPSE_COSINE` is the threshold on ``pair_cos`` above which :func:`is_collapsed`
calls a map collapsed; ``cover pretrain`` logs both numbers at every log step (on the features
its forward pass of that step computed, so the statistic costs no extra forward pass) and warns
when the final features are collapsed, and ``cover analyze`` reports them.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812

#: Mean cosine similarity of random pixel pairs above which features count as collapsed.
COLLAPSE_COSINE = 0.95
#: Effective rank at or below which features count as collapsed (all variance along one or two directions).
COLLAPSE_RANK = 1.5


def sample_pixels(features: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixel feature vectors drawn uniformly (with replacement) from a batch of feature maps.

    Args:
        features: ``(B, C, *S)``.
        count: Number of pixels ``P``.
        generator: Random generator on the CPU (the draw does not touch the global RNG).

    Returns:
        ``(P, C)`` float32 features.
    """
    flat = features.detach().float().movedim(1, -1).reshape(-1, features.shape[1])  # (B * prod(S), C)
    index = torch.randint(0, flat.shape[0], (count,), generator=generator)
    return flat[index.to(flat.device)]


def effective_rank(vectors: torch.Tensor) -> float:
    """Effective rank of the covariance of row vectors.

    Args:
        vectors: ``(P, C)`` samples.

    Returns:
        ``exp(-sum_i p_i log p_i)`` with ``p_i = lambda_i / sum_j lambda_j`` over the
        eigenvalues ``lambda`` of the ``(C, C)`` sample covariance; 0 when every sample is equal.
    """
    centred = vectors.double() - vectors.double().mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / max(1, vectors.shape[0] - 1)
    eigenvalues = torch.linalg.eigvalsh(covariance).clamp(min=0)
    total = float(eigenvalues.sum())
    if total <= 0:
        return 0.0
    p = eigenvalues / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def collapse_stats(features: torch.Tensor, pairs: int = 1024, generator: torch.Generator | None = None) -> dict:
    """Collapse statistics of a batch of feature maps.

    Args:
        features: ``(B, C, *S)`` pixel features (any float dtype, any device).
        pairs: Random pixel pairs ``P`` (the effective rank uses the ``2P`` drawn pixels).
        generator: CPU random generator for the draws (``None``: the global one).

    Returns:
        ``{"pair_cos", "eff_rank"}`` as floats (see the module docstring).
    """
    # The (2P, C) draw is small: its statistics run on the CPU (no float64 eigensolver on a GPU).
    return pixel_stats(sample_pixels(features, 2 * pairs, generator).cpu())


def pixel_stats(drawn: torch.Tensor) -> dict:
    """Collapse statistics of drawn pixel features: rows ``i`` and ``P + i`` form pair ``i``.

    Args:
        drawn: ``(2P, C)`` pixel features drawn at random.

    Returns:
        ``{"pair_cos", "eff_rank"}`` as floats.
    """
    pairs = drawn.shape[0] // 2
    unit = F.normalize(drawn.float(), dim=1, eps=1e-8)
    pair_cos = float((unit[:pairs] * unit[pairs : 2 * pairs]).sum(dim=1).mean())
    return {"pair_cos": pair_cos, "eff_rank": effective_rank(drawn)}


def is_collapsed(stats: dict) -> bool:
    """Whether :func:`collapse_stats` numbers describe a collapsed feature map.

    Args:
        stats: With ``pair_cos`` and ``eff_rank``.

    Returns:
        ``pair_cos > COLLAPSE_COSINE`` or ``eff_rank <= COLLAPSE_RANK``.
    """
    return stats["pair_cos"] > COLLAPSE_COSINE or stats["eff_rank"] <= COLLAPSE_RANK


def describe(stats: dict) -> str:
    """One-line description of collapse statistics, e.g. for a warning."""
    return (
        f"random pixel pairs' mean cosine similarity {stats['pair_cos']:.3f} "
        f"(collapsed above {COLLAPSE_COSINE}), effective rank {stats['eff_rank']:.2f}"
    )
