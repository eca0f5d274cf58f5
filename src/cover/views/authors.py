"""The authors' view generator (``views: {style: authors}``, docs/method.md §3 and §11 D8).

The same roles as :class:`cover.views.ViewGenerator` (view a: appearance only; view b: the
clean source transformed; ``view_b(p) = source(o + p + phi_gt(p))``), drawn the way the
authors' release draws them (facts read from its ``utils/Transform_2d.py``, ``Transform_3d.py``
and ``train_COVER_2d.py``; no code copied):

* the linear part is ``A = R · S · Sh``: the release multiplies its rotation factors next to
  each other, so they collapse into one rotation (2D: angle ``a_x - a_y``, both drawn in
  ``±rotation_deg``; 3D: ``R_0(a_x) R_1(-a_y) R_2(a_z)``), then per-axis scales ``S`` along the
  view's own axes, then a shear with every off-diagonal term (two in 2D, six in 3D);
* the map is ``p -> A (p - (s - 1) / 2) + s // 2 + t`` on the source grid (the release centres
  the mesh at ``(s - 1) / 2`` and adds back ``s // 2``: half a voxel of translation per even
  axis), ``t`` uniform in ``±translation · s``;
* one crop window per batch (offset uniform in ``0 .. s - c - 1``, as ``randint``);
* view a's appearance on the crop, in the order noise -> blur -> contrast -> brightness ->
  blocks, with one noise std, blur sigma, contrast factor (about the batch's mean) and
  brightness shift per batch; up to ``max_blocks`` noise boxes per image with integer sides in
  ``[floor(lo · c), floor(hi · c))`` voxels, at least 3 voxels from the crop's first edge and
  4 from its last, filled with uniform noise shared by the channels.

Not reproduced: the release's warp normalises coordinates for ``align_corners=True`` but
samples with ``align_corners=False``, so its view b sits up to half a pixel from where its own
field says; here view b is sampled exactly at ``o + p + phi_gt(p)``. Its blur also runs along
the batch and channel axes, which is the identity at its sigma (< 0.125, radius 0) as here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from cover.geometry import affine_field, identity_grid, rotation_matrices, sample_at
from cover.views.base import ViewConfig, ViewGenerator, ViewPair, gaussian_blur, tone_changes

#: Voxels a noise block keeps from the crop's first edge; the release keeps one more from the last.
BLOCK_MARGIN = 3


class AuthorsTransform(NamedTuple):
    """Random draws of the authors' spatial transform, one row per sample.

    Attributes:
        angles: ``(B, ndim)`` rotation angles in radians (2D ``a_x, a_y``; 3D ``a_x, a_y, a_z``).
        scales: ``(B, ndim)`` per-axis scales.
        shears: ``(B, ndim * (ndim - 1))`` shear angles in radians, off-diagonal entries in row-major order.
        translation: ``(B, ndim)`` translations in source voxels.
    """

    angles: torch.Tensor
    scales: torch.Tensor
    shears: torch.Tensor
    translation: torch.Tensor


def draw_transform(
    config: ViewConfig, batch: int, src_size: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> AuthorsTransform:
    """Draw the spatial transforms of one batch (the first draws of :func:`authors_view_pair`).

    Args:
        config: Ranges (``rotation_deg``, ``scale_range``, ``shear_deg``, ``translation``).
        batch: ``B``.
        src_size: Source size, length ``ndim``.
        generator: Random generator on ``device``.
        device: Device of the draws.

    Returns:
        The draws, float32.
    """
    ndim = len(src_size)

    def uniform(width: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand((batch, width), generator=generator, device=device)

    rot, shear = math.radians(config.rotation_deg), math.radians(config.shear_deg)
    sizes = torch.tensor(src_size, device=device, dtype=torch.float32)
    return AuthorsTransform(
        angles=uniform(ndim, -rot, rot),
        scales=uniform(ndim, *config.scale_range),
        shears=uniform(ndim * (ndim - 1), -shear, shear),
        translation=uniform(ndim, -config.translation, config.translation) * sizes,
    )


def transform_matrix(draws: AuthorsTransform) -> torch.Tensor:
    """Linear part ``A = R · S · Sh`` acting on array-axis coordinates (the collapsed rotation first).

    Args:
        draws: The draws of :func:`draw_transform`.

    Returns:
        ``(B, ndim, ndim)`` matrices.
    """
    batch, ndim = draws.scales.shape
    if ndim == 2:
        rotation = rotation_matrices(draws.angles[:, 0] - draws.angles[:, 1], 2)
    else:
        # R_0(a_x) R_1(-a_y) R_2(a_z), one axis at a time (rotation_matrices composes the other way round).
        signs = torch.tensor([1.0, -1.0, 1.0], device=draws.angles.device)
        rotation = torch.eye(3, device=draws.angles.device).expand(batch, 3, 3)
        for axis in range(3):
            angles = torch.zeros_like(draws.angles)
            angles[:, axis] = signs[axis] * draws.angles[:, axis]
            rotation = rotation @ rotation_matrices(angles, 3)
    shear = torch.eye(ndim, device=draws.scales.device).repeat(batch, 1, 1)
    off_diagonal = ~torch.eye(ndim, dtype=torch.bool, device=draws.scales.device)
    shear[:, off_diagonal] = torch.tan(draws.shears)
    return rotation @ torch.diag_embed(draws.scales) @ shear


def transform_field(draws: AuthorsTransform, src_size: tuple[int, ...]) -> torch.Tensor:
    """Dense field of ``p -> A (p - (s - 1) / 2) + s // 2 + t`` on the source grid.

    Args:
        draws: The draws of :func:`draw_transform`.
        src_size: Source size, length ``ndim``.

    Returns:
        ``(B, ndim, *src_size)`` displacement field in source voxels.
    """
    recentre = torch.tensor([s // 2 - (s - 1) / 2 for s in src_size], device=draws.translation.device)
    return affine_field(transform_matrix(draws), draws.translation + recentre, src_size)


def authors_view_pair(views: ViewGenerator, source: torch.Tensor, generator: torch.Generator | None) -> ViewPair:
    """One view pair per source image, drawn the authors' way (``ViewGenerator`` with ``style: authors``).

    Draw order: the transforms (:func:`draw_transform`), the elastic field (if on), the crop
    window, then view a's appearance (:func:`appearance`).

    Args:
        views: The generator (its ``config`` and crop ``size``).
        source: ``(B, C, *source_size)`` images.
        generator: Random generator on ``source.device``.

    Returns:
        The :class:`~cover.views.ViewPair` at the crop size.
    """
    batch, ndim, dev = source.shape[0], source.dim() - 2, source.device
    src_size = tuple(source.shape[2:])
    phi_full = views.add_elastic(
        transform_field(draw_transform(views.config, batch, src_size, generator, dev), src_size), generator
    )
    # One window for the batch, offset uniform in 0 .. s - c - 1 (numpy's randint(s - c); 0 if s = c).
    room = torch.tensor([s - c for s, c in zip(src_size, views.size, strict=True)], device=dev)
    offset = torch.floor(torch.rand(ndim, generator=generator, device=dev) * room)
    crop_coords = identity_grid(views.size, device=dev) + offset.view(1, ndim, *([1] * ndim))
    phi_gt = sample_at(phi_full, crop_coords.expand(batch, *crop_coords.shape[1:]), padding="border")
    view_a = appearance(views.config, sample_at(source, crop_coords), generator)
    return views.pair(source, crop_coords, phi_gt, view_a)


def appearance(config: ViewConfig, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The authors' appearance change of a batch of crops: noise, blur, contrast, brightness, blocks.

    Gamma and the bias field (cover's options, off by default) come first when on. Draws, in
    order: noise std, noise, blur sigma (only when ``blur_sigma_max > 0``), contrast factor,
    brightness shift, then the blocks' (:func:`noise_blocks`, only when ``max_blocks > 0``).

    Args:
        config: Appearance settings.
        x: ``(B, C, *spatial)`` crops.
        generator: Random generator on ``x.device``.

    Returns:
        ``(B, C, *spatial)`` changed crops.
    """
    dev = x.device
    x = tone_changes(config, x, generator)

    def scalar() -> torch.Tensor:
        return torch.rand((), generator=generator, device=dev)

    noise_std = scalar() * config.noise_std_max
    x = x + torch.randn(x.shape, generator=generator, device=dev) * noise_std
    if config.blur_sigma_max > 0:
        x = gaussian_blur(x, (scalar() * config.blur_sigma_max).expand(x.shape[0]))
    low, high = config.contrast_range
    mean = x.mean()  # over the whole batch, as the release does
    x = (x - mean) * (low + (high - low) * scalar()) + mean
    x = x + torch.randn((), generator=generator, device=dev) * config.brightness_std
    if config.max_blocks > 0:
        x = noise_blocks(config, x, generator)
    return x


def noise_blocks(config: ViewConfig, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``max_blocks`` integer boxes per image filled with uniform noise in ``[0, 1)``.

    Block ``k`` is drawn if blocks ``1 .. k`` all were (each with ``block_prob``); its side
    along an axis of length ``n`` is uniform in ``floor(lo · n) .. floor(hi · n) - 1``, its start
    uniform in ``3 .. n - side - 4``; the noise is the same in every channel. Draws, in order:
    ``(B, K)`` uniforms for the Bernoulli chain, ``(B, K, ndim)`` for the sides, ``(B, K, ndim)``
    for the starts, ``(B, 1, *spatial)`` noise.

    Args:
        config: ``max_blocks``, ``block_prob``, ``block_size_range``.
        x: ``(B, C, *spatial)`` images.
        generator: Random generator on ``x.device``.

    Returns:
        ``(B, C, *spatial)`` with the boxes filled.
    """
    batch, ndim, dev = x.shape[0], x.dim() - 2, x.device
    spatial = x.shape[2:]
    draws = torch.rand((batch, config.max_blocks), generator=generator, device=dev) < config.block_prob
    active = torch.cumprod(draws.to(torch.int32), dim=1).bool()
    lo = torch.tensor([math.floor(config.block_size_range[0] * n + 1e-9) for n in spatial], device=dev)
    hi = torch.tensor([math.floor(config.block_size_range[1] * n + 1e-9) for n in spatial], device=dev)
    hi = torch.maximum(hi, lo + 1)
    shape = (batch, config.max_blocks, ndim)
    side = (lo + torch.rand(shape, generator=generator, device=dev) * (hi - lo)).floor().clamp(min=1)
    room = (torch.tensor(spatial, device=dev) - side - 2 * BLOCK_MARGIN).clamp(min=1)
    start = BLOCK_MARGIN + (torch.rand(shape, generator=generator, device=dev) * room).floor()
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, device=dev) for n in spatial], indexing="ij"))
    covered = torch.zeros((batch, 1, *spatial), dtype=torch.bool, device=dev)
    view = (batch, ndim) + (1,) * ndim
    for k in range(config.max_blocks):  # a loop over block slots, batched over samples
        first = start[:, k].view(view)
        box = ((coords >= first) & (coords < first + side[:, k].view(view))).all(dim=1, keepdim=True)
        covered |= box & active[:, k].view((batch,) + (1,) * (ndim + 1))
    noise = torch.rand((batch, 1, *spatial), generator=generator, device=dev).to(x.dtype)
    return torch.where(covered, noise, x)
