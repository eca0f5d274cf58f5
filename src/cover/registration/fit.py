"""Optimisation of ``cover register``: affine pre-alignment and per-pair field refinement.

Both minimise MONAI's ``LocalNormalizedCrossCorrelationLoss`` between the fixed image and the
warped moving image with Adam, in torch, on the device of the inputs. Fields follow
docs/method.md §2: ``(1, ndim, *S)`` in voxels, ``warp(moving, phi) ≈ fixed``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F  # noqa: N812

from cover.geometry import affine_field, identity_grid, resize_field, warp
from cover.registration.grid import resize_linear
from cover.runtime import progress_bar


def _lncc(spatial_dims: int, kernel: int) -> torch.nn.Module:
    from monai.losses import LocalNormalizedCrossCorrelationLoss

    return LocalNormalizedCrossCorrelationLoss(spatial_dims=spatial_dims, kernel_size=kernel)


def centre_of_mass(image: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre of ``(1, C, *S)`` in voxels, ``(ndim,)``."""
    weights = image.clamp(min=0).sum(1, keepdim=True)
    grid = identity_grid(image.shape[2:], device=image.device)
    total = weights.sum().clamp(min=1e-8)
    return (grid * weights).flatten(2).sum(-1)[0] / total


def fit_affine(
    fixed: torch.Tensor, moving: torch.Tensor, steps: int, kernel: int = 7, max_side: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine map with ``moving(A (p - c) + c + t) ≈ fixed(p)`` (``c`` = grid centre).

    Starts from the translation between the centres of mass, then runs Adam on the local
    normalised cross correlation at a resolution whose longest side is at most ``max_side``.

    Args:
        fixed: ``(1, C, *S)`` normalised fixed image.
        moving: ``(1, C, *S)`` normalised moving image on the same grid.
        steps: Adam steps (0 gives the centre-of-mass translation).
        kernel: LNCC window.
        max_side: Longest side of the grid the fit runs on.

    Returns:
        ``(A, t)``: ``(ndim, ndim)`` matrix and ``(ndim,)`` translation in voxels of ``S``.
    """
    ndim = fixed.dim() - 2
    size = tuple(fixed.shape[2:])
    factor = min(1.0, max_side / max(size))
    small = tuple(max(8, int(round(s * factor))) for s in size)
    scale = torch.tensor([s / n for s, n in zip(small, size, strict=True)], device=fixed.device)
    f_small, m_small = resize_linear(fixed, small), resize_linear(moving, small)
    translation = ((centre_of_mass(moving) - centre_of_mass(fixed)) * scale).detach().clone().requires_grad_(True)
    delta = torch.zeros(ndim, ndim, device=fixed.device, requires_grad=True)
    eye = torch.eye(ndim, device=fixed.device)
    if steps > 0:
        loss_fn = _lncc(ndim, min(kernel, 2 * (min(small) // 4) + 1))
        optimizer = torch.optim.Adam([{"params": [delta], "lr": 0.01}, {"params": [translation], "lr": 0.2}])
        for _ in progress_bar(range(steps), desc="affine", leave=False, disable=steps < 20):
            phi = affine_field((eye + delta)[None], translation[None], small)
            loss = loss_fn(warp(m_small, phi), f_small)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # Back to the full grid: voxel coordinates scale per axis by 1 / scale.
    inv = 1.0 / scale
    matrix = torch.diag(inv) @ (eye + delta.detach()) @ torch.diag(scale)
    return matrix, translation.detach() * inv


def affine_then(matrix: torch.Tensor, translation: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Total field of the network's field ``phi`` on the affinely pre-aligned moving image.

    With ``a(q) = (A - I)(q - c) + t`` and the network's ``fixed(p) ≈ moving(p + phi + a(p + phi))``,
    the total is ``a(p) + A phi(p)`` exactly (``a`` is affine, so no resampling is needed).

    Args:
        matrix: ``(ndim, ndim)`` ``A``.
        translation: ``(ndim,)`` ``t`` in voxels.
        phi: ``(1, ndim, *S)`` network field on the pre-aligned image.

    Returns:
        ``(1, ndim, *S)`` total field.
    """
    spatial = phi.shape[2:]
    base = affine_field(matrix[None], translation[None], spatial)
    return base + torch.einsum("ij,bj...->bi...", matrix, phi)


def refine_field(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    phi: torch.Tensor,
    steps: int,
    lr: float = 0.5,
    kernel: int = 7,
    smoothness: float = 1.0,
    grid: int = 4,
) -> tuple[torch.Tensor, list[float]]:
    """Refine a field on one pair: Adam on ``LNCC(warp(moving, phi), fixed) + w * diffusion(phi)``.

    The field is parameterised on a grid ``grid`` times coarser than the image:
    ``phi = U(c)`` with ``U`` linear up-sampling with values rescaled
    (:func:`cover.geometry.resize_field`). ``c`` starts as the area average of the starting
    field (the network's, or affine + network), which keeps its large-scale motion and drops
    voxel-scale noise and folds; the optimisation then adjusts ``c``. The losses are MONAI's
    ``LocalNormalizedCrossCorrelationLoss`` and ``DiffusionLoss``.

    Args:
        fixed: ``(1, C, *S)`` normalised fixed image.
        moving: ``(1, C, *S)`` normalised moving image on the same grid.
        phi: ``(1, ndim, *S)`` starting field in voxels.
        steps: Adam steps.
        lr: Learning rate, in voxels of ``S`` per step.
        kernel: LNCC window.
        smoothness: Regulariser weight.
        grid: Coarsening factor of the parameter grid (1: every voxel is a parameter).

    Returns:
        ``(refined field (1, ndim, *S), losses per step)``.
    """
    from monai.losses import DiffusionLoss

    ndim = fixed.dim() - 2
    similarity = _lncc(ndim, kernel)
    regulariser = DiffusionLoss()
    size = tuple(phi.shape[2:])
    coarse = tuple(max(2, math.ceil(s / grid)) for s in size)
    factors = torch.tensor([c / s for c, s in zip(coarse, size, strict=True)], device=phi.device)
    pool = getattr(F, f"adaptive_avg_pool{ndim}d")
    start = pool(phi.detach(), coarse) * factors.view(1, ndim, *[1] * ndim)
    params = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=lr * float(factors.mean()))

    def current() -> torch.Tensor:
        return resize_field(params, size)

    losses = []
    for _ in progress_bar(range(steps), desc="refine", leave=False, disable=steps < 20):
        field = current()
        with warnings.catch_warnings():  # MONAI's DiffusionLoss indexes with a list (torch deprecation)
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            penalty = regulariser(field)
        loss = similarity(warp(moving, field), fixed) + smoothness * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        return current(), losses
