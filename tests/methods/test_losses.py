import pytest
import torch

from cover.methods.losses import consistency_loss, endpoint_error, vector_loss


def test_vector_loss_is_masked_mean_l1_and_ignores_invalid():
    phi = torch.zeros(1, 2, 4, 4)
    gt = torch.zeros(1, 2, 4, 4)
    gt[:, 0] = 1.0
    gt[:, 1] = -2.0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    assert torch.isclose(vector_loss(phi, gt, mask), torch.tensor(3.0))
    gt_changed = gt.clone()
    gt_changed[..., 2:, :] = 1000.0  # outside the mask
    assert torch.isclose(vector_loss(phi, gt_changed, mask), torch.tensor(3.0))
    assert torch.isclose(endpoint_error(phi, gt, mask), torch.tensor(5.0).sqrt())


def test_consistency_loss_ignores_invalid_and_is_zero_for_equal_features():
    fb = torch.randn(2, 8, 5, 5)
    mask = torch.ones(2, 1, 5, 5)
    mask[..., 0, :] = 0
    other = fb.clone()
    other[..., 0, :] = torch.randn(2, 8, 5)  # differs only where invalid
    assert consistency_loss(fb, other, mask).abs() < 1e-6
    assert torch.isclose(consistency_loss(fb, -fb, mask), torch.tensor(2.0))


def test_vector_loss_and_endpoint_error_match_a_voxel_loop():
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(2, 3, 4, 5, 3, generator=generator) * 2
    gt = torch.randn(2, 3, 4, 5, 3, generator=generator) * 2
    mask = (torch.rand(2, 1, 4, 5, 3, generator=generator) > 0.4).float()
    l1 = l2 = count = 0.0
    for b in range(2):
        for i in range(4):
            for j in range(5):
                for k in range(3):
                    if mask[b, 0, i, j, k]:
                        error = [float(phi[b, c, i, j, k] - gt[b, c, i, j, k]) for c in range(3)]
                        l1 += sum(abs(e) for e in error)
                        l2 += sum(e * e for e in error) ** 0.5
                        count += 1
    assert 0 < count < 2 * 4 * 5 * 3
    assert float(vector_loss(phi, gt, mask)) == pytest.approx(l1 / count, rel=1e-5)
    assert float(endpoint_error(phi, gt, mask)) == pytest.approx(l2 / count, rel=1e-5)


def test_consistency_loss_matches_a_voxel_loop():
    generator = torch.Generator().manual_seed(1)
    fb, fa = torch.randn(2, 5, 6, 4, generator=generator), torch.randn(2, 5, 6, 4, generator=generator)
    mask = (torch.rand(2, 1, 6, 4, generator=generator) > 0.3).float()
    cosines = []
    for b in range(2):
        for i in range(6):
            for j in range(4):
                if mask[b, 0, i, j]:
                    u, v = fb[b, :, i, j].tolist(), fa[b, :, i, j].tolist()
                    dot = sum(x * y for x, y in zip(u, v, strict=True))
                    cosines.append(dot / (sum(x * x for x in u) ** 0.5 * sum(y * y for y in v) ** 0.5))
    assert float(consistency_loss(fb, fa, mask)) == pytest.approx(1 - sum(cosines) / len(cosines), rel=1e-5)
