import math

import numpy as np
import pytest
import torch

from _support import oracles
from cover.geometry import (
    affine_field,
    compose,
    field_jacobian_determinant,
    identity_grid,
    random_affine_matrices,
    random_elastic_field,
    resize_field,
    sample_at,
    upsample_field,
    warp,
)


def test_identity_grid_values():
    grid = identity_grid((3, 4))
    assert grid.shape == (1, 2, 3, 4)
    assert grid[0, 0, 2, 1] == 2 and grid[0, 1, 2, 1] == 1


def test_warp_zero_field_is_identity_2d_3d():
    for spatial in [(7, 9), (4, 5, 6)]:
        x = torch.randn(2, 3, *spatial)
        phi = torch.zeros(2, len(spatial), *spatial)
        torch.testing.assert_close(warp(x, phi), x, atol=1e-5, rtol=0)


def test_warp_integer_shift_convention():
    x = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6)
    phi = torch.zeros(1, 2, 5, 6)
    phi[:, 0], phi[:, 1] = 1.0, -2.0  # out(p) = x(p + (1, -2))
    out = warp(x, phi)
    assert torch.allclose(out[0, 0, 0, 2:], x[0, 0, 1, :4])
    assert out[0, 0, :, :2].abs().max() < 1e-5  # reads left of the image: zeros
    assert out[0, 0, 4].abs().max() < 1e-5  # reads below the image: zeros


def test_warp_nearest_reads_the_nearest_voxel_of_a_varying_field():
    torch.manual_seed(0)
    labels = torch.randint(1, 5, (1, 1, 7, 8)).float()  # no zeros: reading outside gives 0, a new value
    phi = 2.4 * torch.sin(identity_grid((7, 8)) / torch.tensor([2.0, 3.0]).view(1, 2, 1, 1)).flip(1)
    phi = phi + 0.3  # keep clear of half-voxel positions, where rounding is a matter of convention
    out = warp(labels, phi, mode="nearest")
    expected = oracles.sample_nearest(labels[0].numpy(), oracles.grid((7, 8)) + phi[0].numpy())
    np.testing.assert_array_equal(out[0].numpy(), expected)
    assert (expected == 0).any() and (expected > 0).mean() > 0.5  # both outside and inside reads
    moved = (np.rint(phi[0].numpy()) != 0).any(0) & (expected[0] > 0)
    assert moved.any() and not np.array_equal(expected[0][moved], labels[0, 0].numpy()[moved])


def test_affine_field_reproduces_affine_map_2d_and_3d():
    gen = torch.Generator().manual_seed(0)
    for ndim, spatial in [(2, (11, 13)), (3, (7, 8, 9))]:
        matrix = random_affine_matrices(
            2, ndim, rotation_deg=20, num_rotations=2, scale_range=(0.8, 1.2), shear_deg=5, generator=gen
        )
        translation = torch.randn(2, ndim, generator=gen)
        phi = affine_field(matrix, translation, spatial)
        grid = identity_grid(spatial).expand(2, -1, *spatial)
        # Warping the coordinate grid by phi gives the mapped coordinates (inside the image).
        mapped = warp(grid, phi)
        centre = torch.tensor([(s - 1) / 2 for s in spatial]).view(1, ndim, 1)
        expected = (matrix @ (grid.flatten(2) - centre) + centre + translation.unsqueeze(-1)).view_as(grid)
        upper = torch.tensor(spatial).view(1, ndim, *[1] * ndim) - 1
        inside = ((expected >= 0) & (expected <= upper)).all(1, keepdim=True).expand_as(expected)
        assert inside.float().mean() > 0.5
        torch.testing.assert_close(mapped[inside], expected[inside], atol=1e-4, rtol=0)


def test_rotation_only_preserves_lengths():
    gen = torch.Generator().manual_seed(3)
    m = random_affine_matrices(4, 3, rotation_deg=30, num_rotations=1, scale_range=(1, 1), shear_deg=0, generator=gen)
    torch.testing.assert_close(m @ m.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-5, rtol=0)


def test_compose_constant_shifts_is_sum():
    u = torch.zeros(1, 2, 10, 10)
    v = torch.zeros(1, 2, 10, 10)
    u[:, 0], u[:, 1] = 1.0, 2.0
    v[:, 0], v[:, 1] = -0.5, 1.5
    w = compose(u, v)
    torch.testing.assert_close(w[..., :7, :6], (u + v)[..., :7, :6])


def test_compose_matches_sequential_warps():
    torch.manual_seed(0)
    grid = identity_grid((24, 24))
    x = torch.sin(grid[:, :1] / 3.0) * torch.cos(grid[:, 1:] / 4.0)  # smooth: interpolation is exact-ish
    u = random_elastic_field(1, (24, 24), magnitude=0.8, control_spacing=8)
    v = random_elastic_field(1, (24, 24), magnitude=0.8, control_spacing=8)
    # warp(warp(x, v), u)(p) = x(p + u(p) + v(p + u(p))) = warp(x, compose(u, v))(p)
    once = warp(x, compose(u, v))
    twice = warp(warp(x, v), u)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    difference = (once[inner] - twice[inner]).abs()
    assert difference.max() < 0.06 and difference.mean() < 0.01


def field_of_map(matrix: np.ndarray, shift: np.ndarray, spatial: tuple[int, ...]) -> torch.Tensor:
    """Field on a grid of ``spatial`` voxels of the map ``y -> A y + t`` of the unit box.

    Voxel ``q`` of an ``n``-voxel axis covers ``[q, q + 1] / n`` (centre ``(q + 0.5) / n``), the
    geometry of a max-pooled pyramid, so the same map has a field on every grid size.
    """
    n = np.array(spatial, dtype=np.float64).reshape(-1, *[1] * len(spatial))
    q = oracles.grid(spatial)
    y = (q + 0.5) / n
    mapped = np.einsum("ij,j...->i...", matrix, y) + shift.reshape(n.shape)
    return torch.from_numpy(mapped * n - 0.5 - q).float()[None]


@pytest.mark.parametrize(
    "coarse,fine",
    [((6, 7), (12, 14)), ((4, 5, 6), (8, 10, 12)), ((6, 9), (12, 4)), ((8, 6, 4), (5, 12, 8))],
)
def test_resized_field_of_an_affine_map_is_the_same_map_on_the_new_grid(coarse, fine):
    """Up- and down-sampling (values rescaled per axis) keep the physical map, in the half-voxel
    convention of pooled pyramids; voxels whose source lies beyond the coarse centres are clamped
    (no extrapolation) and left out."""
    ndim = len(coarse)
    rng = np.random.default_rng(ndim)
    matrix = np.eye(ndim) + rng.uniform(-0.4, 0.4, (ndim, ndim))  # far from identity: large gradients
    shift = rng.uniform(-0.1, 0.1, ndim)
    phi = field_of_map(matrix, shift, coarse)
    resized = resize_field(phi, fine)
    if fine == tuple(2 * s for s in coarse):
        torch.testing.assert_close(upsample_field(phi), resize_field(phi, fine))
    expected = field_of_map(matrix, shift, fine)
    ratio = np.array(coarse) / np.array(fine)
    source = [(np.arange(n) + 0.5) * r - 0.5 for n, r in zip(fine, ratio, strict=True)]
    keep = [np.flatnonzero((s >= 0) & (s <= c - 1)) for s, c in zip(source, coarse, strict=True)]
    index = np.ix_(*keep)
    assert all(len(k) >= 2 for k in keep)
    torch.testing.assert_close(resized[(0, slice(None), *index)], expected[(0, slice(None), *index)], atol=1e-4, rtol=0)


def test_upsample_field_doubles_and_matches_the_half_voxel_oracle_everywhere():
    torch.manual_seed(1)
    phi = torch.randn(2, 2, 5, 7) * 3.0
    up = upsample_field(phi)
    for b in range(2):
        expected = oracles.upsample2_field(phi[b].double().numpy())
        np.testing.assert_allclose(up[b].numpy(), expected, atol=1e-5)


def test_warp_matches_the_multilinear_oracle_on_a_varying_field_2d_3d():
    torch.manual_seed(2)
    for spatial in [(9, 11), (5, 6, 7)]:
        x = torch.randn(2, 3, *spatial)
        phi = torch.randn(2, len(spatial), *spatial) * 2.0  # many reads fall outside: zeros
        out = warp(x, phi)
        for b in range(2):
            expected = oracles.warp(x[b].numpy(), phi[b].numpy())
            np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-5)


def test_compose_applies_u_first_then_looks_up_v():
    torch.manual_seed(3)
    u = torch.randn(1, 3, 5, 6, 7) * 1.5
    v = torch.randn(1, 3, 5, 6, 7) * 1.5
    w = compose(u, v)
    expected = u[0].numpy() + oracles.warp(v[0].numpy(), u[0].numpy())
    np.testing.assert_allclose(w[0].numpy(), expected, atol=1e-5)
    swapped = v[0].numpy() + oracles.warp(u[0].numpy(), v[0].numpy())
    assert np.abs(expected - swapped).mean() > 0.5  # the order matters for these fields


def test_sample_at_broadcasts_single_grid():
    x = torch.randn(3, 2, 5, 5)
    out = sample_at(x, identity_grid((5, 5)))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_jacobian_of_affine_field_is_det():
    angle = torch.tensor([math.radians(30)])
    matrix = torch.tensor([[[1.5 * math.cos(angle), -math.sin(angle)], [1.5 * math.sin(angle), math.cos(angle)]]])
    phi = affine_field(matrix, torch.zeros(1, 2), (9, 9))
    det = field_jacobian_determinant(phi)
    torch.testing.assert_close(det, torch.full_like(det, float(torch.det(matrix[0]))), atol=1e-4, rtol=0)


def test_sample_at_samples_bf16_inputs_at_float32_positions():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 128, 128).to(torch.bfloat16)
    coords = identity_grid((8, 8)) + torch.tensor([60.3, 100.7]).view(1, 2, 1, 1)
    out = sample_at(x, coords)
    assert out.dtype == torch.bfloat16
    # Same as sampling the (exactly representable) bf16 values in float32, then rounding once:
    # the sampling positions are not rounded to bf16 (which would move them by ~0.25 voxel).
    assert torch.equal(out, sample_at(x.float(), coords).to(torch.bfloat16))
