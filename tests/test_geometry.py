import math

import torch

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


def test_warp_nearest_keeps_labels():
    labels = torch.randint(0, 4, (1, 1, 6, 6)).float()
    phi = torch.full((1, 2, 6, 6), 0.4)
    out = warp(labels, phi, mode="nearest")
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0.0}


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


def test_resize_field_doubles_values():
    phi = torch.full((1, 3, 4, 4, 4), 1.5)
    up = upsample_field(phi)
    assert up.shape == (1, 3, 8, 8, 8)
    torch.testing.assert_close(up, torch.full_like(up, 3.0))
    anisotropic = resize_field(torch.ones(1, 2, 4, 6), (8, 3))
    torch.testing.assert_close(anisotropic[:, 0], torch.full((1, 8, 3), 2.0))
    torch.testing.assert_close(anisotropic[:, 1], torch.full((1, 8, 3), 0.5))


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
