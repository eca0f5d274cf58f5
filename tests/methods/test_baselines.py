"""Numeric oracles for the binary contrastive baselines (NT-Xent, dense InfoNCE, SimCLR)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from _support.oracles import loop_nt_xent
from cover.geometry import warp
from cover.methods.dense_infonce import (
    SAMPLING_SEED,
    DenseInfoNCEMethod,
    features_at,
    flat_to_coords,
    sample_valid_pixels,
)
from cover.methods.simclr import SimCLRMethod
from cover.views import ViewPair


def test_sampled_pixels_are_distinct_and_valid():
    mask = torch.zeros(2, 1, 6, 7)
    mask[0, 0, 1:4, 2:6] = 1  # 12 valid pixels
    mask[1, 0, 0, :3] = 1  # 3 valid pixels
    idx = sample_valid_pixels(mask, 5, torch.Generator().manual_seed(0))
    assert idx.shape == (2, 5)
    assert len(set(idx[0].tolist())) == 5 and mask.flatten(1)[0, idx[0]].eq(1).all()
    assert mask.flatten(1)[1, idx[1]].sum() == 3  # all 3 valid ones come first, then invalid ones
    coords = flat_to_coords(idx, (6, 7))
    assert torch.equal(coords[:, 0] * 7 + coords[:, 1], idx.float())


@pytest.mark.parametrize("dim", [2, 3])
def test_features_at_reads_full_resolution_coordinates_on_coarse_levels(dim):
    size = (8, 8) if dim == 2 else (8, 8, 8)
    ramp = torch.arange(8.0).view(1, 1, *([1] * (dim - 1)), 8).expand(1, 1, *size).contiguous()
    coarse = (F.avg_pool2d if dim == 2 else F.avg_pool3d)(ramp, 2)
    coords = torch.zeros(1, dim, 3)
    coords[0, -1] = torch.tensor([2.0, 3.5, 5.0])  # interior points along the last axis
    for level in (ramp, coarse):
        values = features_at(level, coords, size)
        assert values.shape == (1, 3, 1)
        assert torch.allclose(values[0, :, 0], coords[0, -1], atol=1e-5)


class StubBackbone(nn.Module):
    """Returns the input itself as the finest level (and a pooled copy as the coarse one)."""

    spatial_dims = 2

    def __init__(self, channels):
        super().__init__()
        self.pyramid_channels = (channels, channels)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return [F.avg_pool2d(x, 2) * self.scale, x * self.scale]


def test_dense_infonce_pairs_corresponding_pixels_through_phi_gt():
    g = torch.Generator().manual_seed(4)
    channels, size, shift = 16, (8, 8), (1.0, -2.0)
    view_a = torch.randn(2, channels, *size, generator=g)
    phi = torch.tensor(shift).view(1, 2, 1, 1).expand(2, 2, *size).contiguous()
    view_b = warp(view_a, phi)  # view_b(p) = view_a(p + shift)
    rows = torch.arange(8.0).view(8, 1) + shift[0]
    cols = torch.arange(8.0).view(1, 8) + shift[1]
    inside = ((rows >= 0) & (rows <= 7) & (cols >= 0) & (cols <= 7)).float()
    mask = inside.expand(2, 1, *size).contiguous()
    views = ViewPair(view_a, view_b, phi, mask)
    method = DenseInfoNCEMethod(StubBackbone(channels), temperature=0.3, num_pixels=10)
    method.head.projectors[0] = nn.Identity()
    out = method(views)
    assert int(method.head.step) == 1
    idx = sample_valid_pixels(mask, 10, torch.Generator().manual_seed(SAMPLING_SEED))
    z_b, z_a = [], []
    for b in range(2):
        for flat in idx[b].tolist():
            r, c = divmod(flat, 8)
            z_b.append(view_b[b, :, r, c])
            z_a.append(view_a[b, :, r + int(shift[0]), c + int(shift[1])])
    expected, expected_acc = loop_nt_xent(torch.stack(z_b), torch.stack(z_a), 0.3)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["acc_pos"].item() == expected_acc == 1.0  # identical partners, random distinct negatives
    out["loss"].backward()
    assert method.backbone.scale.grad is not None


def test_simclr_contrasts_pooled_bottlenecks_of_the_two_views():
    g = torch.Generator().manual_seed(5)
    view_a, view_b = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    views = ViewPair(view_a, view_b, torch.zeros(3, 2, 4, 4), torch.ones(3, 1, 4, 4))
    method = SimCLRMethod(StubBackbone(4), temperature=0.2)
    method.head = nn.Identity()
    out = method(views)
    expected, expected_acc = loop_nt_xent(view_a.mean(dim=(2, 3)), view_b.mean(dim=(2, 3)), 0.2)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["acc_pos"].item() == pytest.approx(expected_acc)
