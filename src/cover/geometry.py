"""Dense displacement fields: sampling, warping, composition, resizing, random fields.

Conventions (docs/method.md §2), shared by every module of the package:

* Images and features are ``(B, C, *spatial)`` with ``spatial`` = ``(H, W)`` or ``(D, H, W)``.
* A displacement field ``phi`` is ``(B, ndim, *spatial)``; channel ``k`` is the displacement
  along array axis ``k`` in voxels of the grid the field lives on.
* ``warp(x, phi)(p) = x(p + phi(p))``, (bi/tri)linear, zeros outside.
* ``compose(u, v)(p) = u(p) + v(p + u(p))`` (apply ``u``, then look up ``v``).

All functions are dimension-generic and run on the device of their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

_INTERP_MODES = {2: "bilinear", 3: "trilinear"}


def linear_mode(spatial_dims: int) -> str:
    """Name of the linear interpolation mode of ``torch.nn.functional.interpolate``.

    Args:
        spatial_dims: 2 or 3.

    Returns:
        ``"bilinear"`` or ``"trilinear"``.
    """
    return _INTERP_MODES[spatial_dims]


def identity_grid(
    spatial: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Voxel coordinates of a grid.

    Args:
        spatial: Grid size in array axis order, length ``ndim``.
        device: Device of the result.
        dtype: Floating dtype of the result.

    Returns:
        Tensor ``(1, ndim, *spatial)``; channel ``k`` holds the index along axis ``k``.
    """
    axes = [torch.arange(n, device=device, dtype=dtype) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def sample_at(x: torch.Tensor, coords: torch.Tensor, mode: str = "linear", padding: str = "zeros") -> torch.Tensor:
    """Sample ``x`` at absolute voxel coordinates; the single place where resampling happens.

    Args:
        x: Image or features ``(B, C, *in_spatial)``.
        coords: Voxel coordinates of ``x`` to read, ``(B, ndim, *out_spatial)`` (channel ``k``
            along array axis ``k``). A batch of 1 broadcasts over ``x``'s batch.
        mode: ``"linear"`` (bi/trilinear) or ``"nearest"`` (for label maps).
        padding: ``"zeros"`` or ``"border"`` (``torch.nn.functional.grid_sample`` names).

    Returns:
        Tensor ``(B, C, *out_spatial)`` with ``out(p) = x(coords(p))``.
    """
    ndim = coords.shape[1]
    if x.dim() != ndim + 2:
        raise ValueError(f"x has {x.dim() - 2} spatial dims but coords has {ndim} channels")
    if coords.shape[0] == 1 and x.shape[0] > 1:
        coords = coords.expand(x.shape[0], *coords.shape[1:])
    sizes = torch.tensor(x.shape[2:], device=coords.device, dtype=coords.dtype)
    scale = 2.0 / (sizes - 1).clamp(min=1)
    view = (1, ndim) + (1,) * ndim
    normalised = coords * scale.view(view) - 1.0
    # grid_sample wants (B, *out_spatial, ndim) with the last axis ordered (x, y[, z]),
    # i.e. reversed array axes.
    grid = normalised.movedim(1, -1).flip(-1)
    # Sample in the higher of the two precisions: rounding the grid to bf16 would move the
    # sampling positions by up to ~0.25 voxel at 128 voxels.
    dtype = torch.promote_types(x.dtype, grid.dtype)
    out = F.grid_sample(
        x.to(dtype),
        grid.to(dtype),
        mode="bilinear" if mode == "linear" else "nearest",
        padding_mode=padding,
        align_corners=True,
    )
    return out.to(x.dtype)


def warp(x: torch.Tensor, phi: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """Warp by a displacement field: ``warp(x, phi)(p) = x(p + phi(p))``, zeros outside.

    Args:
        x: Image or features ``(B, C, *spatial)``.
        phi: Displacement field ``(B, ndim, *spatial)`` in voxels of this grid.
        mode: ``"linear"`` or ``"nearest"`` (labels).

    Returns:
        Warped tensor ``(B, C, *spatial)``.
    """
    grid = identity_grid(phi.shape[2:], device=phi.device, dtype=phi.dtype)
    return sample_at(x, grid + phi, mode=mode)


def compose(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Compose two fields: apply ``u``, then look up ``v``.

    Args:
        u: First field ``(B, ndim, *spatial)``.
        v: Second field ``(B, ndim, *spatial)``, same grid.

    Returns:
        ``(v ∘ u)(p) = u(p) + v(p + u(p))``, shape ``(B, ndim, *spatial)``.
    """
    return u + warp(v, u)


def resize_field(phi: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resample a displacement field to another grid size, rescaling its values.

    Values are multiplied per axis by ``new_size / old_size`` so they stay in voxels of the
    new grid (a 2x upsampling doubles them, docs/method.md §2).

    Args:
        phi: Field ``(B, ndim, *spatial)``.
        size: New spatial size, length ``ndim``.

    Returns:
        Field ``(B, ndim, *size)``.
    """
    ndim = phi.shape[1]
    size = tuple(int(s) for s in size)
    resized = F.interpolate(phi, size=size, mode=linear_mode(ndim), align_corners=False)
    factors = torch.tensor(
        [new / old for new, old in zip(size, phi.shape[2:], strict=True)],
        device=phi.device,
        dtype=phi.dtype,
    )
    return resized * factors.view((1, ndim) + (1,) * ndim)


def upsample_field(phi: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample a field by an integer factor (values multiplied by the factor).

    Args:
        phi: Field ``(B, ndim, *spatial)``.
        factor: Integer scale factor.

    Returns:
        Field ``(B, ndim, *(factor * s for s in spatial))``.
    """
    return resize_field(phi, [s * factor for s in phi.shape[2:]])


def rotation_matrices(angles: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Rotation matrices from angles in radians.

    Args:
        angles: ``(B,)`` in 2D; ``(B, 3)`` in 3D (rotations about array axes 0, 1, 2, applied
            in that order).
        spatial_dims: 2 or 3.

    Returns:
        ``(B, ndim, ndim)`` rotation matrices acting on array-axis coordinates.
    """
    if spatial_dims == 2:
        c, s = torch.cos(angles), torch.sin(angles)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    batch = angles.shape[0]
    result = torch.eye(3, device=angles.device, dtype=angles.dtype).expand(batch, 3, 3)
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        rot = torch.eye(3, device=angles.device, dtype=angles.dtype).repeat(batch, 1, 1)
        rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = c, -s, s, c
        result = rot @ result
    return result


def affine_field(
    matrix: torch.Tensor, translation: torch.Tensor, spatial: Sequence[int], center: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense displacement field of an affine map about a centre.

    The map sends ``p`` to ``A (p - c) + c + t``; the field is that minus ``p``.

    Args:
        matrix: ``(B, ndim, ndim)`` linear part ``A``.
        translation: ``(B, ndim)`` translation ``t`` in voxels.
        spatial: Grid size, length ``ndim``.
        center: ``(B, ndim)`` or ``(ndim,)`` centre ``c`` in voxels; default the grid centre.

    Returns:
        Field ``(B, ndim, *spatial)``.
    """
    ndim = len(spatial)
    grid = identity_grid(spatial, device=matrix.device, dtype=matrix.dtype)
    if center is None:
        center = torch.tensor([(s - 1) / 2.0 for s in spatial], device=matrix.device, dtype=matrix.dtype)
    center = center.reshape(-1, ndim)
    flat = grid.flatten(2)  # (1, ndim, N)
    rel = flat - center.unsqueeze(-1)  # (B or 1, ndim, N)
    moved = matrix @ rel + (center + translation).unsqueeze(-1)
    return (moved - flat).reshape(matrix.shape[0], ndim, *spatial)


def random_affine_matrices(
    batch: int,
    spatial_dims: int,
    *,
    rotation_deg: float,
    num_rotations: int,
    scale_range: tuple[float, float],
    shear_deg: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random linear maps ``R_k … R_1`` around ``Shear @ Scale``.

    The matrix is ``R_2 @ Shear @ Scale @ R_1`` (with ``num_rotations = 2``), so the scaling
    axes are themselves randomly oriented.

    Args:
        batch: Number of matrices ``B``.
        spatial_dims: 2 or 3.
        rotation_deg: Each rotation angle is uniform in ``±rotation_deg`` (per axis in 3D).
        num_rotations: 0, 1 or 2 rotation factors.
        scale_range: Per-axis scale uniform in ``[low, high]``.
        shear_deg: Each shear angle uniform in ``±shear_deg``.
        generator: Random generator (on ``device``).
        device: Device of the result.

    Returns:
        ``(B, ndim, ndim)`` float32 matrices.
    """
    n = spatial_dims

    def uniform(shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        r = torch.rand(shape, generator=generator, device=device)
        return low + (high - low) * r

    angle_shape = (batch,) if n == 2 else (batch, 3)
    max_angle = math.radians(rotation_deg)
    scale = torch.diag_embed(uniform((batch, n), scale_range[0], scale_range[1]))
    shear = torch.eye(n, device=device).repeat(batch, 1, 1)
    rows, cols = torch.triu_indices(n, n, offset=1)
    shear[:, rows, cols] = torch.tan(uniform((batch, len(rows)), -1.0, 1.0) * math.radians(shear_deg))
    matrix = shear @ scale
    for index in range(num_rotations):
        rot = rotation_matrices(uniform(angle_shape, -max_angle, max_angle), n)
        matrix = rot @ matrix if index % 2 == 1 else matrix @ rot
    return matrix


def random_elastic_field(
    batch: int,
    spatial: Sequence[int],
    *,
    magnitude: float,
    control_spacing: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A smooth random displacement field.

    Gaussian displacements on a coarse control grid (one point every ``control_spacing``
    voxels, at least 2 per axis) are interpolated (bi/tri)linearly twice, which smooths them.

    Args:
        batch: ``B``.
        spatial: Grid size, length ``ndim``.
        magnitude: Standard deviation of the control displacements, in voxels.
        control_spacing: Voxels between control points.
        generator: Random generator (on ``device``).
        device: Device of the result.

    Returns:
        Field ``(B, ndim, *spatial)``.
    """
    ndim = len(spatial)
    coarse = [max(2, math.ceil(s / control_spacing) + 1) for s in spatial]
    control = torch.randn((batch, ndim, *coarse), generator=generator, device=device) * magnitude
    mid = [max(2, 2 * c) for c in coarse]
    smooth = F.interpolate(control, size=mid, mode=linear_mode(ndim), align_corners=True)
    return F.interpolate(smooth, size=tuple(spatial), mode=linear_mode(ndim), align_corners=True)


def field_jacobian_determinant(phi: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant of the map ``p -> p + phi(p)`` by central differences.

    Args:
        phi: Field ``(B, ndim, *spatial)``.

    Returns:
        ``(B, *spatial)`` determinants (edges use one-sided differences).
    """
    ndim = phi.shape[1]
    grads = torch.stack(torch.gradient(phi, dim=list(range(2, 2 + ndim))), dim=2)  # (B, i, j, *S)
    eye = torch.eye(ndim, device=phi.device, dtype=phi.dtype).view(1, ndim, ndim, *([1] * ndim))
    jac = (grads + eye).movedim(1, -1).movedim(1, -1)  # (B, *S, i, j)
    return torch.linalg.det(jac)
