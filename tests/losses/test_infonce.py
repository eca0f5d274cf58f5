"""NT-Xent (``cover.losses.infonce``) against a plain loop, MONAI's ContrastiveLoss, and its module form."""

import pytest
import torch
from monai.losses import ContrastiveLoss

from _support.oracles import loop_nt_xent
from cover.losses.infonce import nt_xent


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nt_xent_matches_the_loop(t):
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    loss, acc = nt_xent(z_a, z_b, t)
    expected, expected_acc = loop_nt_xent(z_a, z_b, t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert acc.item() == pytest.approx(expected_acc)


def test_nt_xent_agrees_with_monai_contrastive_loss():
    g = torch.Generator().manual_seed(1)
    z_a, z_b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    loss, _ = nt_xent(z_a, z_b, 0.5)
    assert loss.item() == pytest.approx(ContrastiveLoss(temperature=0.5)(z_a, z_b).item(), rel=1e-5)


def test_nt_xent_drops_invalid_pairs_as_anchors_and_negatives():
    g = torch.Generator().manual_seed(2)
    z_a, z_b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    weights = torch.tensor([1, 0, 1, 1, 0, 1])
    loss, acc = nt_xent(z_a, z_b, 0.2, weights)
    expected, expected_acc = loop_nt_xent(z_a, z_b, 0.2, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    keep = weights.bool()
    assert loss.item() == pytest.approx(nt_xent(z_a[keep], z_b[keep], 0.2)[0].item(), rel=1e-6)
    assert acc.item() == pytest.approx(expected_acc)
    empty, _ = nt_xent(z_a, z_b, 0.2, torch.zeros(6))
    assert empty.item() == 0.0


def test_loss_modules_match_the_loop_and_average_levels():
    from cover.losses import DenseInfoNCELoss, NTXentLoss

    g = torch.Generator().manual_seed(4)
    z_a, z_b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    loss, acc = NTXentLoss(0.3)(z_a, z_b)
    expected, expected_acc = loop_nt_xent(z_a, z_b, 0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-5) and acc.item() == pytest.approx(expected_acc)
    levels_b = [torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)]
    levels_a = [torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)]
    valid = torch.tensor([1, 1, 0, 1, 1, 1])
    loss, acc = DenseInfoNCELoss(0.2)(levels_b, levels_a, valid)
    per_level = [loop_nt_xent(b, a, 0.2, valid) for b, a in zip(levels_b, levels_a)]
    assert loss.item() == pytest.approx(sum(v for v, _ in per_level) / 2, rel=1e-5)
    assert acc.item() == pytest.approx(sum(v for _, v in per_level) / 2)
    assert not NTXentLoss(0.1).state_dict()


def test_nt_xent_of_an_all_invalid_batch_is_zero_under_float16_autocast():
    """The blocked logits (-1e9) would overflow to -inf in float16 and give NaN."""
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    with torch.autocast("cpu", dtype=torch.float16):
        loss, _ = nt_xent(z_a, z_b, 0.1, weights=torch.zeros(6))
        valid, _ = nt_xent(z_a, z_b, 0.1)
    assert loss.item() == 0.0
    assert torch.allclose(valid, nt_xent(z_a, z_b, 0.1)[0], rtol=1e-5)
