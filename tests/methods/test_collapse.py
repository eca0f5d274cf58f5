import numpy as np
import torch

from cover.methods.collapse import (
    COLLAPSE_COSINE,
    collapse_stats,
    effective_rank,
    is_collapsed,
    sample_pixels,
)


def numpy_effective_rank(x: np.ndarray) -> float:
    covariance = np.cov(x, rowvar=False)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0, None)
    p = eigenvalues / eigenvalues.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_matches_a_numpy_oracle_and_known_spectra():
    rng = np.random.default_rng(4)
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x = rng.normal(size=(4000, 6)) * scales @ rotation.T + rng.normal(size=6)
    assert abs(effective_rank(torch.from_numpy(x)) - numpy_effective_rank(x)) < 1e-9
    # Equal variance in k orthogonal directions gives exactly k.
    basis = np.eye(5)[:3]
    signs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
    assert abs(effective_rank(torch.from_numpy(signs @ basis)) - 3.0) < 1e-9
    assert effective_rank(torch.ones(10, 4)) == 0.0


def test_pair_cosine_is_the_mean_cosine_of_the_drawn_pairs():
    features = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    stats = collapse_stats(features, pairs=100, generator=torch.Generator().manual_seed(7))
    drawn = sample_pixels(features, 200, torch.Generator().manual_seed(7)).numpy().astype(np.float64)
    unit = drawn / np.linalg.norm(drawn, axis=1, keepdims=True)
    expected = np.mean([unit[i] @ unit[100 + i] for i in range(100)])
    assert abs(stats["pair_cos"] - expected) < 1e-5
    # The drawn pixels are pixels of the map: each row is some (b, :, y, x) feature vector.
    flat = features.movedim(1, -1).reshape(-1, 5).numpy()
    assert all(np.isclose(flat, row, atol=0).all(axis=1).any() for row in drawn.astype(np.float32))


def test_detects_a_collapsed_and_a_healthy_feature_map():
    generator = torch.Generator().manual_seed(0)
    channels, size = 16, 24
    direction = torch.randn(channels, generator=generator)
    # Collapsed: one direction scaled by a positive, spatially varying amplitude, plus tiny noise.
    amplitude = 1.0 + torch.rand(2, 1, size, size, generator=generator)
    collapsed = amplitude * direction.view(1, channels, 1, 1)
    collapsed = collapsed + 1e-3 * torch.randn(collapsed.shape, generator=generator)
    # Healthy: smooth maps with independent random directions per region.
    healthy = torch.nn.functional.interpolate(torch.randn(2, channels, 6, 6, generator=generator), size=(size, size))
    bad = collapse_stats(collapsed, generator=torch.Generator().manual_seed(1))
    good = collapse_stats(healthy, generator=torch.Generator().manual_seed(1))
    assert bad["pair_cos"] > 0.99 and bad["eff_rank"] < 1.1, bad
    assert abs(good["pair_cos"]) < 0.2 and good["eff_rank"] > 8, good
    assert is_collapsed(bad) and not is_collapsed(good)
    # A constant direction with isotropic noise: high rank of the residual, but still collapsed.
    constant = direction.view(1, channels, 1, 1).expand(2, channels, size, size)
    constant = constant + 1e-2 * torch.randn(constant.shape, generator=generator)
    stats = collapse_stats(constant, generator=torch.Generator().manual_seed(1))
    assert stats["pair_cos"] > COLLAPSE_COSINE and stats["eff_rank"] > 8 and is_collapsed(stats)


def test_works_in_3d_and_leaves_the_global_rng_alone():
    features = torch.randn(1, 4, 6, 6, 6, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    stats = collapse_stats(features, pairs=50, generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.rand(1), before)
    drawn = sample_pixels(features, 100, torch.Generator().manual_seed(2)).numpy().astype(np.float64)
    assert abs(stats["eff_rank"] - numpy_effective_rank(drawn)) < 1e-6 and 2 < stats["eff_rank"] <= 4
