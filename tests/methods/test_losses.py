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
