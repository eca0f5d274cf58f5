import numpy as np
import torch

from _support import oracles
from cover.geometry import identity_grid, sample_at
from cover.views import ViewConfig, ViewGenerator, gaussian_blur


def smooth_images(batch, spatial):
    grid = identity_grid(spatial)
    x = sum(torch.sin(grid[:, k : k + 1] / (2.0 + k)) for k in range(len(spatial)))
    return x.expand(batch, 1, *spatial) * torch.linspace(0.5, 1.5, batch).view(batch, *[1] * (len(spatial) + 1))


def no_appearance(config: ViewConfig) -> ViewConfig:
    config.noise_std_max = config.blur_sigma_max = config.brightness_std = 0.0
    config.contrast_range = (1.0, 1.0)
    config.max_blocks = 0
    return config


def test_view_b_is_view_a_read_at_p_plus_phi_gt_inside_the_mask_2d_and_3d():
    """Reference transforms (2D: large rotation/scale/shear; 3D: affine + elastic), checked per
    voxel with the NumPy sampler; the mask is the inside test of ``p + phi_gt(p)``."""
    for spatial, crop in [((48, 40), (32, 32)), ((24, 24, 24), (16, 16, 16))]:
        cfg = no_appearance(ViewConfig.reference(len(spatial)))
        gen = ViewGenerator(cfg, crop)
        source = smooth_images(3, spatial)
        views = gen(source, torch.Generator().manual_seed(0))
        assert views.view_a.shape == (3, 1, *crop) and views.phi_gt.shape == (3, len(spatial), *crop)
        assert float(views.phi_gt.abs().mean()) > 1.0  # far from the identity
        for b in range(3):
            phi = views.phi_gt[b].double().numpy()
            target = oracles.grid(crop) + phi
            inside = np.all([(target[k] >= 0) & (target[k] <= crop[k] - 1) for k in range(len(crop))], axis=0)
            np.testing.assert_array_equal(views.mask[b, 0].numpy(), inside.astype(np.float32))
            assert 0.05 < inside.mean() < 1.0
            expected = oracles.sample_linear(views.view_a[b].numpy(), target)[0]
            np.testing.assert_allclose(views.view_b[b, 0].numpy()[inside], expected[inside], atol=1e-4)


def test_elastic_views_have_a_non_affine_phi_gt():
    """With ``elastic`` on, ``phi_gt`` is not an affine function of the voxel position; off, it is."""
    cfg = no_appearance(ViewConfig.reference(3))
    coords = np.concatenate([oracles.grid((16, 16, 16)).reshape(3, -1), np.ones((1, 16**3))]).T
    for elastic, low, high in [(True, 0.3, np.inf), (False, 0.0, 1e-3)]:
        cfg.elastic = elastic
        views = ViewGenerator(cfg, (16, 16, 16))(smooth_images(1, (24, 24, 24)), torch.Generator().manual_seed(1))
        phi = views.phi_gt[0].double().numpy().reshape(3, -1).T
        residual = phi - coords @ np.linalg.lstsq(coords, phi, rcond=None)[0]
        assert low <= np.abs(residual).max() < high, elastic


def test_appearance_changes_reach_view_a_only():
    """Same seed with and without appearance changes: identical view b and phi_gt, changed view a."""
    source = smooth_images(2, (48, 40))
    plain = ViewGenerator(no_appearance(ViewConfig.reference(2)), (32, 32))(source, torch.Generator().manual_seed(3))
    full = ViewGenerator(ViewConfig.reference(2), (32, 32))(source, torch.Generator().manual_seed(3))
    assert torch.equal(plain.view_b, full.view_b) and torch.equal(plain.phi_gt, full.phi_gt)
    assert torch.equal(plain.mask, full.mask)
    assert float((plain.view_a - full.view_a).abs().mean()) > 0.01


def test_views_are_reproducible_from_the_generator_seed():
    gen = ViewGenerator(ViewConfig.reference(2), (16, 16))
    x = torch.rand(2, 1, 24, 24)
    a = gen(x, torch.Generator().manual_seed(5))
    b = gen(x, torch.Generator().manual_seed(5))
    c = gen(x, torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.phi_gt, c.phi_gt)


def test_view_a_is_a_pure_crop_without_appearance_change():
    cfg = no_appearance(ViewConfig.reference(2))
    x = torch.rand(2, 1, 24, 24)
    views = ViewGenerator(cfg, (16, 16))(x, torch.Generator().manual_seed(2))
    # view a is an integer-offset crop: each appears somewhere inside its source.
    for i in range(2):
        windows = x[i, 0].unfold(0, 16, 1).unfold(1, 16, 1)
        diffs = (windows - views.view_a[i, 0]).abs().amax(dim=(-1, -2))
        assert diffs.min() < 1e-5


def test_an_inpainted_block_is_one_box_of_the_configured_side_filled_with_uniform_noise():
    cfg = no_appearance(ViewConfig.reference(2))
    cfg.max_blocks, cfg.block_prob, cfg.block_size_range = 1, 1.0, (0.25, 0.3)  # sides 8 to 9.6 px
    gen = ViewGenerator(cfg, (32, 32))
    out = gen.appearance(torch.full((3, 1, 32, 32), -1.0), torch.Generator().manual_seed(0))
    for image in out[:, 0]:
        changed = image != -1.0
        rows, cols = torch.nonzero(changed, as_tuple=True)
        box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all())  # one filled rectangle, nothing outside it
        assert int(changed.sum()) == box.numel()
        assert all(8 <= n <= 10 for n in box.shape), box.shape
        values = image[changed]
        assert float(values.min()) >= 0.0 and float(values.max()) < 1.0 and float(values.std()) > 0.2
    cfg.block_prob = 0.0
    untouched = gen.appearance(torch.full((3, 1, 32, 32), -1.0), torch.Generator().manual_seed(0))
    assert bool((untouched == -1.0).all())


def test_gaussian_blur_matches_loop_and_zero_sigma_is_identity():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 12, 12)
    out = gaussian_blur(x, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)
    taps = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-0.5 * taps**2)
    kernel /= kernel.sum()
    padded = torch.nn.functional.pad(x[1:], (3, 3, 3, 3), mode="replicate")[0, 0]
    expected = torch.zeros(12, 12)
    for i in range(12):
        for j in range(12):
            patch = padded[i : i + 7, j : j + 7]
            expected[i, j] = (kernel[:, None] * kernel[None, :] * patch).sum()
    torch.testing.assert_close(out[1, 0], expected, atol=1e-5, rtol=0)


def test_sample_at_crop_is_exact_at_integer_coordinates():
    x = torch.rand(1, 1, 10, 10)
    coords = identity_grid((4, 4)) + torch.tensor([3.0, 5.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(sample_at(x, coords), x[:, :, 3:7, 5:9], atol=1e-6, rtol=0)


def test_max_displacement_shrinks_each_transform_towards_the_identity_2d_and_3d():
    from cover.geometry import warp
    from cover.views import capture_range

    assert capture_range(2, 5) == 62 and capture_range(1, 4) == 15
    for spatial, crop, limit in [((72, 72), (48, 48), 6.0), ((24, 24, 24), (16, 16, 16), 2.0)]:
        free_cfg = no_appearance(ViewConfig.reference(len(spatial)))
        limited_cfg = no_appearance(ViewConfig.reference(len(spatial)))
        limited_cfg.max_displacement = limit
        source = smooth_images(3, spatial)
        free = ViewGenerator(free_cfg, crop)(source, torch.Generator().manual_seed(0))
        limited = ViewGenerator(limited_cfg, crop)(source, torch.Generator().manual_seed(0))
        largest = free.phi_gt.abs().flatten(1).amax(dim=1)
        assert (largest > limit).any()  # the reference ranges exceed the limit somewhere
        factor = (limit / largest).clamp(max=1.0).view(3, *[1] * (len(spatial) + 1))
        torch.testing.assert_close(limited.phi_gt, free.phi_gt * factor)
        assert limited.phi_gt.abs().max() <= limit + 1e-4
        # view b, the mask and phi_gt stay consistent with each other.
        torch.testing.assert_close(limited.view_a, free.view_a)
        target = identity_grid(crop) + limited.phi_gt
        upper = torch.tensor(crop, dtype=torch.float32).view(1, len(crop), *[1] * len(crop)) - 1
        assert torch.equal(((target >= 0) & (target <= upper)).all(1, keepdim=True).float(), limited.mask)
        inside = limited.mask.bool()
        rebuilt = warp(limited.view_a, limited.phi_gt)
        torch.testing.assert_close(rebuilt[inside], limited.view_b[inside], atol=1e-4, rtol=0)


def test_gamma_change_raises_each_image_to_one_power_in_range():
    """With only gamma on, view a's source is ``x ** g`` with one ``g`` per image inside gamma_range."""
    cfg = no_appearance(ViewConfig.reference(2))
    cfg.gamma_range = (0.5, 2.0)
    x = 0.1 + 0.8 * torch.rand(3, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    y = ViewGenerator(cfg, (16, 16)).appearance(x, torch.Generator().manual_seed(1))
    powers = torch.log(y) / torch.log(x)  # per pixel; one value per image if a single gamma was used
    per_image = powers.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-4)
    gammas = per_image[:, 0]
    assert bool(((gammas > 0.5) & (gammas < 2.0)).all())
    assert float(gammas.max() - gammas.min()) > 0.05  # drawn per image, not once per batch


def test_bias_field_is_a_smooth_positive_factor_and_off_by_default():
    """bias_std > 0 multiplies each image by exp(b), b smooth (small neighbour steps) with std near bias_std."""
    x = 0.2 + torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    plain = no_appearance(ViewConfig.reference(2))
    assert torch.allclose(ViewGenerator(plain, (32, 32)).appearance(x, torch.Generator().manual_seed(2)), x, atol=1e-6)
    plain.bias_std = 0.3
    y = ViewGenerator(plain, (32, 32)).appearance(x, torch.Generator().manual_seed(2))
    log_factor = torch.log(y / x)[:, 0]
    assert 0.1 < float(log_factor.std()) < 0.6
    # Smooth: neighbouring pixels' factors differ far less than the field varies overall.
    step = (log_factor[:, 1:] - log_factor[:, :-1]).abs().max()
    assert float(step) < 0.2 * float(log_factor.max() - log_factor.min())
    assert not torch.allclose(log_factor[0], log_factor[1])


def test_gamma_and_bias_change_view_a_only():
    """Same seed with and without gamma and bias field: identical view b, phi_gt and mask, changed view a."""
    source = smooth_images(2, (48, 40)).abs()
    changed = ViewConfig.reference(2)
    changed.gamma_range, changed.bias_std = (0.6, 1.6), 0.3
    a = ViewGenerator(ViewConfig.reference(2), (32, 32))(source, torch.Generator().manual_seed(4))
    b = ViewGenerator(changed, (32, 32))(source, torch.Generator().manual_seed(4))
    assert torch.equal(a.view_b, b.view_b) and torch.equal(a.phi_gt, b.phi_gt) and torch.equal(a.mask, b.mask)
    assert float((a.view_a - b.view_a).abs().mean()) > 0.01


def test_gaussian_blur_radius_from_the_bound_keeps_each_samples_blur():
    """With ``max_sigma`` the radius comes from the bound: the same sample blurs the same beside any batch-mate."""
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    alone = gaussian_blur(x[:1], torch.tensor([0.4]), max_sigma=1.0)  # radius 3 from the bound
    paired = gaussian_blur(x, torch.tensor([0.4, 1.0]), max_sigma=1.0)
    torch.testing.assert_close(paired[:1], alone, atol=1e-6, rtol=0)  # float rounding of a grouped conv
    narrow = gaussian_blur(x[:1], torch.tensor([0.4]))  # radius 2 from the sample's own sigma
    torch.testing.assert_close(narrow, alone, atol=1e-4, rtol=0)  # taps beyond 5 sigma weigh < 1e-5
