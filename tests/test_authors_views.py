"""The authors' view style against plain transcriptions of the release's formulas (docs/method.md §3).

The oracle below writes the release's matrix out the way its ``rand_coords`` builds it (each
factor assembled with ``np.stack(..., axis=1)``, i.e. the transpose of the rows as written, the
product ``Sh · S · R_y · R_x``, applied to row vectors of the zero-centred mesh, then the
translation and ``+ s // 2 - p``). It imports nothing from ``cover``.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cover.views import ViewConfig, ViewGenerator
from cover.views.authors import appearance, draw_transform, transform_field, transform_matrix


def release_flow(angles, scales, shears, translation, shape):
    """Flow ``coords - grid`` of one sample as the release computes it (float64)."""
    n = len(shape)
    c, s = np.cos(angles), np.sin(angles)
    if n == 2:
        rot_x = np.stack([np.stack([c[0], -s[0]]), np.stack([s[0], c[0]])], axis=1)
        rot_y = np.stack([np.stack([c[1], s[1]]), np.stack([-s[1], c[1]])], axis=1)
        mat = rot_y @ rot_x
    else:
        rot_x = np.stack([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]], axis=1)
        rot_y = np.stack([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]], axis=1)
        rot_z = np.stack([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]], axis=1)
        mat = rot_z @ rot_y @ rot_x
    mat = np.diag(scales) @ mat
    t = iter(np.tan(shears))
    written = [[1.0 if i == j else next(t) for j in range(n)] for i in range(n)]
    mat = np.stack([np.array(row) for row in written], axis=1) @ mat
    mesh = np.array(np.meshgrid(*[np.arange(k) for k in shape], indexing="ij"), dtype=float)
    centred = mesh - ((np.array(shape) - 1) / 2.0).reshape(n, *[1] * n)
    affine = (centred.reshape(n, -1).T @ mat).T.reshape(mesh.shape) + np.reshape(translation, (n, *[1] * n))
    return affine + (np.array(shape) // 2).reshape(n, *[1] * n) - mesh


def no_appearance(config: ViewConfig) -> ViewConfig:
    config.noise_std_max = config.blur_sigma_max = config.brightness_std = 0.0
    config.contrast_range = (1.0, 1.0)
    config.max_blocks = 0
    return config


def authors(spatial_dims: int) -> ViewConfig:
    config = ViewConfig.reference(spatial_dims)
    config.style, config.elastic = "authors", False
    return config


def smooth_images(batch, spatial):
    axes = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in spatial], indexing="ij")
    x = sum(np.sin(a / (3.0 + k) + k) for k, a in enumerate(axes)) + axes[0] / spatial[0]
    scale = np.linspace(0.5, 1.5, batch, dtype=np.float32).reshape(batch, 1, *[1] * len(spatial))
    return torch.from_numpy(x[None, None] * scale)


@pytest.mark.parametrize("spatial", [(48, 40), (22, 24, 20)])
def test_field_and_phi_gt_equal_the_release_formula_on_the_same_draws(spatial):
    """Same draws into cover and into the transcribed release: same field on the source grid, and
    ``phi_gt`` is that field cut at one integer window shared by the whole batch."""
    crop = tuple(s - 8 for s in spatial)
    config = no_appearance(authors(len(spatial)))
    draws = draw_transform(config, 3, spatial, torch.Generator().manual_seed(7), torch.device("cpu"))
    field = transform_field(draws, spatial).double().numpy()
    expected = [release_flow(*(d[b].double().numpy() for d in draws), spatial) for b in range(3)]
    assert max(np.abs(e).max() for e in expected) > 5  # far from the identity
    for b in range(3):
        np.testing.assert_allclose(field[b], expected[b], atol=2e-3)
    # The generator's first draws are these transforms; find its window by exhaustive search.
    views = ViewGenerator(config, crop)(smooth_images(3, spatial), torch.Generator().manual_seed(7))
    phi = views.phi_gt.double().numpy()
    windows = [
        o
        for o in np.ndindex(*(s - c for s, c in zip(spatial, crop, strict=True)))
        if all(
            np.abs(expected[b][(slice(None), *[slice(i, i + c) for i, c in zip(o, crop, strict=True)])] - phi[b]).max()
            < 2e-3
            for b in range(3)
        )
    ]
    assert len(windows) == 1, windows
    window = (slice(None), slice(None), *[slice(i, i + c) for i, c in zip(windows[0], crop, strict=True)])
    torch.testing.assert_close(views.view_a, smooth_images(3, spatial)[window], atol=1e-5, rtol=0)


def test_the_two_rotations_collapse_and_both_shear_terms_are_used():
    """2D: ``A = R(a_x - a_y) · S · Sh`` with both off-diagonal shear entries; cover's style differs."""
    config = authors(2)
    draws = draw_transform(config, 512, (96, 96), torch.Generator().manual_seed(0), torch.device("cpu"))
    matrix = transform_matrix(draws).double()
    shear = torch.tan(draws.shears.double())
    angle = (draws.angles[:, 0] - draws.angles[:, 1]).double()
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    sh = torch.eye(2, dtype=torch.float64).repeat(512, 1, 1)
    sh[:, 0, 1], sh[:, 1, 0] = shear[:, 0], shear[:, 1]
    torch.testing.assert_close(matrix, rot @ torch.diag_embed(draws.scales.double()) @ sh, atol=1e-5, rtol=0)
    # R^T A = S · Sh: its lower off-diagonal is scale_1 · tan(shear_yx), nonzero.
    assert float((rot.transpose(1, 2) @ matrix)[:, 1, 0].abs().max()) > 0.05
    # The collapsed angle ranges over ±2 · rotation_deg (a triangular distribution).
    assert math.degrees(float(angle.abs().max())) > 45


def test_view_b_is_the_source_resampled_by_scipy_at_o_plus_p_plus_phi_gt():
    """View b against ``scipy.ndimage.map_coordinates`` (order 1) at the window's coordinates plus
    ``phi_gt``, where every coordinate lies inside the source."""
    spatial, crop = (56, 48), (40, 32)
    source = smooth_images(2, spatial)
    config = no_appearance(authors(2))
    views = ViewGenerator(config, crop)(source, torch.Generator().manual_seed(3))
    for b in range(2):
        # view a is a pure crop (appearance off): recover the window from it.
        a = views.view_a[b, 0].numpy()
        offsets = [
            o
            for o in np.ndindex(spatial[0] - crop[0] + 1, spatial[1] - crop[1] + 1)
            if np.abs(source[b, 0].numpy()[o[0] : o[0] + crop[0], o[1] : o[1] + crop[1]] - a).max() < 1e-5
        ]
        assert len(offsets) == 1
        grid = np.array(np.meshgrid(*[np.arange(c) for c in crop], indexing="ij"), dtype=np.float64)
        coords = grid + np.reshape(offsets[0], (2, 1, 1)) + views.phi_gt[b].double().numpy()
        inside = np.all([(coords[k] >= 0) & (coords[k] <= spatial[k] - 1) for k in range(2)], axis=0)
        assert inside.mean() > 0.2
        expected = ndimage.map_coordinates(source[b, 0].double().numpy(), coords, order=1)
        np.testing.assert_allclose(views.view_b[b, 0].numpy()[inside], expected[inside], atol=1e-4)


def plain_appearance(config: ViewConfig, x: np.ndarray, seed: int) -> np.ndarray:
    """The documented order with the documented draws, one sample and one block at a time."""
    g = torch.Generator().manual_seed(seed)
    std = float(torch.rand((), generator=g)) * config.noise_std_max
    x = x + torch.randn(x.shape, generator=g).double().numpy() * std
    low, high = config.contrast_range
    factor = low + (high - low) * float(torch.rand((), generator=g))
    mean = x.mean()
    x = (x - mean) * factor + mean
    x = x + float(torch.randn((), generator=g)) * config.brightness_std
    batch, k_max = x.shape[0], config.max_blocks
    chain = torch.rand((batch, k_max), generator=g).numpy()
    sides = torch.rand((batch, k_max, 2), generator=g).numpy()
    starts = torch.rand((batch, k_max, 2), generator=g).numpy()
    noise = torch.rand((batch, 1, *x.shape[2:]), generator=g).double().numpy()
    out = x.copy()
    for b in range(batch):
        for k in range(k_max):
            if chain[b, k] >= config.block_prob:
                break
            box = []
            for axis, n in enumerate(x.shape[2:]):
                lo, hi = int(config.block_size_range[0] * n), int(config.block_size_range[1] * n)
                side = lo + int(sides[b, k, axis] * (hi - lo))
                start = 3 + int(starts[b, k, axis] * (n - side - 6))
                box.append(slice(start, start + side))
            out[(b, slice(None), *box)] = noise[(b, slice(None), *box)]
    return out


def test_appearance_is_noise_blur_contrast_brightness_then_blocks_per_batch():
    """Against the plain version on the same draws: one noise std, contrast factor (about the
    batch mean) and brightness shift for the batch, then boxes of 9-11 px on the 96 px crop."""
    config = authors(2)
    config.blur_sigma_max, config.noise_std_max = 0.0, 0.05
    x = smooth_images(4, (96, 80)).repeat(1, 2, 1, 1)
    x[:, 1] *= -1.0
    got = appearance(config, x, torch.Generator().manual_seed(11)).double().numpy()
    np.testing.assert_allclose(got, plain_appearance(config, x.double().numpy(), 11), atol=1e-5)


def test_blocks_lie_in_the_release_margins_with_the_release_sides_and_contrast_is_shared():
    config = no_appearance(authors(2))
    config.max_blocks, config.block_prob = 1, 1.0
    x = torch.full((64, 2, 96, 80), -1.0)
    out = appearance(config, x, torch.Generator().manual_seed(0))
    sides = set()
    for image in out:
        changed = image[0] != -1.0
        rows, cols = torch.nonzero(changed, as_tuple=True)
        assert int(rows.min()) >= 3 and int(cols.min()) >= 3
        assert int(rows.max()) <= 96 - 5 and int(cols.max()) <= 80 - 5
        sides.add((int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1))
        assert torch.equal(image[0], image[1])  # the same noise in every channel
    # floor(0.1 n) .. floor(0.133 n) - 1: 9-11 rows of 96, 8-9 columns of 80 (the release's 3n//30 .. 4n//30).
    assert {r for r, _ in sides} == {9, 10, 11} and {c for _, c in sides} == {8, 9}
    # Contrast and brightness without noise or blocks: one affine map for the whole batch.
    config = no_appearance(authors(2))
    config.contrast_range, config.brightness_std = (0.5, 1.5), 0.1
    x = smooth_images(4, (32, 32))
    out = appearance(config, x, torch.Generator().manual_seed(1))
    design = torch.stack([x.flatten(), torch.ones(x.numel())], 1).double()
    solution = torch.linalg.lstsq(design, out.flatten().double().unsqueeze(1)).solution
    assert float((design @ solution - out.flatten().double().unsqueeze(1)).abs().max()) < 1e-5
    assert abs(float(solution[0]) - 1.0) > 0.01
