import torch

from cover.geometry import identity_grid, sample_at, warp
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


def test_view_b_is_view_a_warped_by_phi_gt_inside_mask_2d_and_3d():
    for spatial, crop in [((48, 40), (32, 32)), ((24, 24, 24), (16, 16, 16))]:
        cfg = no_appearance(ViewConfig.reference(len(spatial)))
        gen = ViewGenerator(cfg, crop)
        source = smooth_images(3, spatial)
        views = gen(source, torch.Generator().manual_seed(0))
        assert views.view_a.shape == (3, 1, *crop) and views.phi_gt.shape == (3, len(spatial), *crop)
        assert 0.05 < views.mask.mean() < 1.0
        rebuilt = warp(views.view_a, views.phi_gt)
        inside = views.mask.bool()
        torch.testing.assert_close(rebuilt[inside], views.view_b[inside], atol=1e-4, rtol=0)


def test_mask_is_exactly_where_target_falls_inside():
    cfg = ViewConfig.reference(2)
    views = ViewGenerator(cfg, (16, 16))(torch.rand(4, 1, 24, 24), torch.Generator().manual_seed(1))
    target = identity_grid((16, 16)) + views.phi_gt
    inside = ((target >= 0) & (target <= 15)).all(1, keepdim=True).float()
    assert torch.equal(inside, views.mask)


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


def test_inpainting_blocks_and_appearance_change_view_a_only_in_intensity():
    cfg = ViewConfig.reference(2)
    cfg.noise_std_max = cfg.blur_sigma_max = cfg.brightness_std = 0.0
    cfg.contrast_range = (1.0, 1.0)
    cfg.block_prob = 1.0
    gen = ViewGenerator(cfg, (32, 32))
    x = torch.zeros(2, 1, 32, 32)
    out = gen.appearance(x, torch.Generator().manual_seed(0))
    covered = (out != 0).float().mean()
    assert 0.05 < covered < 0.2  # ten blocks of side ~0.1-0.13 of the image


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
