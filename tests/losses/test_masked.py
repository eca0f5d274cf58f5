import pytest
import torch

from cover.losses.masked import consistency_loss, endpoint_error, vector_loss


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


def test_centre_features_removes_each_images_channel_mean():
    from cover.losses.masked import centre_features

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) ** 1.5
    centred = centre_features(x + torch.tensor([1.0, -7.0, 30.0]).view(1, 3, 1, 1))
    torch.testing.assert_close(centred, centre_features(x))
    torch.testing.assert_close(centred.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-3, rtol=0)


def test_variance_covariance_terms_match_a_plain_loop():
    import numpy as np

    from cover.losses.masked import variance_covariance_loss

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 4, 4, generator=generator) * torch.tensor([0.5, 2.0, 0.1]).view(1, 3, 1, 1)
    mask = (torch.rand(2, 1, 4, 4, generator=generator) > 0.3).float()
    var, cov = variance_covariance_loss(features, mask, target_std=1.0, eps=0.0)
    pixels = [(b, i, j) for b in range(2) for i in range(4) for j in range(4) if mask[b, 0, i, j]]
    x = np.array([features[b, :, i, j].double().numpy() for b, i, j in pixels])
    k = np.cov(x, rowvar=False)
    expected_var = np.mean([max(0.0, 1.0 - np.sqrt(k[c, c])) for c in range(3)])
    expected_cov = sum(k[a, b] ** 2 for a in range(3) for b in range(3) if a != b) / 3
    assert abs(float(var) - expected_var) < 1e-5 and abs(float(cov) - expected_cov) < 1e-4


def test_relative_vector_loss_is_one_for_the_zero_field():
    from cover.losses.masked import relative_vector_loss

    gt = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 1, 5, 5)
    assert torch.isclose(relative_vector_loss(torch.zeros_like(gt), gt, mask), torch.tensor(1.0))
    assert torch.isclose(relative_vector_loss(gt, gt, mask), torch.tensor(0.0))
    assert torch.isclose(relative_vector_loss(0.5 * gt, gt, mask), torch.tensor(0.5))


def test_loss_modules_give_the_hand_computed_values_and_hold_no_state():
    from cover.losses import ConsistencyLoss, VarianceCovarianceLoss, VectorLoss

    phi = torch.zeros(1, 2, 4, 4)
    gt = torch.zeros(1, 2, 4, 4)
    gt[:, 0] = 1.0
    gt[:, 1] = -2.0
    gt[..., 2:, :] = 1000.0  # outside the mask
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    assert float(VectorLoss()(phi, gt, mask)) == pytest.approx(3.0)
    # relative: the error of phi over the error of the zero field; phi = gt / 2 inside the mask
    half = torch.where(mask.bool(), gt / 2, torch.zeros_like(gt))
    assert float(VectorLoss(relative=True)(half, gt, mask)) == pytest.approx(0.5)
    fb = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 2, 1)  # two pixels, 2 channels
    fa = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(1, 2, 2, 1)  # cosines 1/sqrt(2) and 1
    both = torch.ones(1, 1, 2, 1)
    assert float(ConsistencyLoss()(fb, fa, both)) == pytest.approx(1 - (2**-0.5 + 1) / 2, rel=1e-6)
    # two channels over 4 pixels: x = (0, 0, 2, 2) has std sqrt(4/3); y = -x: covariance -4/3
    x = torch.tensor([0.0, 0.0, 2.0, 2.0])
    features = torch.stack([x, -x]).view(1, 2, 4, 1)
    variance, covariance = VarianceCovarianceLoss(target_std=2.0)(features, torch.ones(1, 1, 4, 1))
    assert float(variance) == pytest.approx(2.0 - (4 / 3 + 1e-4) ** 0.5, rel=1e-5)
    assert float(covariance) == pytest.approx(2 * (4 / 3) ** 2 / 2, rel=1e-5)
    for module in (VectorLoss(), ConsistencyLoss(), VarianceCovarianceLoss()):
        assert not module.state_dict()  # adds nothing to a method's checkpoint


def test_variance_covariance_terms_stay_finite_under_float16_autocast_at_384_squared():
    """Both views of one 384^2 image: 294,912 pixels whose squared sums exceed float16's 65504.

    Under autocast the covariance's matrix product would run in float16 and overflow (the
    variance term 0, the covariance NaN); it runs in float32 and equals the float32 result.
    """
    from cover.losses.masked import variance_covariance_loss

    generator = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 1.5, 16).view(1, 16, 1, 1)  # channels of unequal spread
    features = (torch.randn(2, 16, 384, 384, generator=generator) * scale + 0.3).half()  # as a float16 conv gives
    mask = torch.ones(2, 1, 384, 384)
    reference = variance_covariance_loss(features.float(), mask)
    with torch.autocast("cpu", dtype=torch.float16):
        half = variance_covariance_loss(features, mask)
    for got, want in zip(half, reference, strict=True):
        assert torch.isfinite(got) and got.dtype == torch.float32
        assert torch.allclose(got, want, rtol=1e-2, atol=1e-6)
    assert reference[0] > 0.05  # the hinge is active: a channel below std 1 moves the variance term
