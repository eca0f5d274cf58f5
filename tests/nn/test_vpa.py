import torch

from cover.nn.unet import UNet
from cover.nn.vpa import VectorPyramidAggregation


class ConstantShift(torch.nn.Module):
    def __init__(self, shift):
        super().__init__()
        self.shift = torch.tensor(shift, dtype=torch.float32)

    def forward(self, feat_b, feat_a):
        shape = (feat_b.shape[0], len(self.shift), *feat_b.shape[2:])
        return self.shift.view(1, -1, *[1] * (len(shape) - 2)).expand(shape).clone()


def pyramid(batch, channels, sizes):
    return [torch.randn(batch, c, *s) for c, s in zip(channels, sizes)]


def test_constant_level_shifts_compose_to_their_upsampled_sum_2d():
    channels = (16, 8, 4)
    vpa = VectorPyramidAggregation(2, channels, heads=(1, 1, 1), head_dim=4, radius=1)
    shifts = [(0.5, -0.25), (1.0, 0.5), (-0.5, 1.0)]
    for level, shift in enumerate(shifts):
        vpa.levels[level] = ConstantShift(shift)
    sizes = [(8, 8), (16, 16), (32, 32)]
    phi = vpa(pyramid(1, channels, sizes), pyramid(1, channels, sizes))
    # Level 0 (1/4) and level 1 (1/2) shifts are upsampled 4x and 2x; the finest adds as is.
    expected = torch.tensor([4 * 0.5 + 2 * 1.0 - 0.5, 4 * -0.25 + 2 * 0.5 + 1.0])
    inner = phi[0, :, 8:-8, 8:-8]
    torch.testing.assert_close(inner, expected.view(2, 1, 1).expand_as(inner), atol=1e-5, rtol=0)


def test_constant_level_shifts_compose_3d():
    channels = (8, 4)
    vpa = VectorPyramidAggregation(3, channels, heads=(1, 1), head_dim=4, radius=1)
    vpa.levels[0] = ConstantShift((1.0, 0.0, -1.0))
    vpa.levels[1] = ConstantShift((0.5, 0.5, 0.5))
    sizes = [(6, 6, 6), (12, 12, 12)]
    phi = vpa(pyramid(1, channels, sizes), pyramid(1, channels, sizes))
    inner = phi[0, :, 4:-4, 4:-4, 4:-4]
    expected = torch.tensor([2.5, 0.5, -1.5]).view(3, 1, 1, 1).expand_as(inner)
    torch.testing.assert_close(inner, expected, atol=1e-5, rtol=0)


def test_vpa_of_identical_pyramids_predicts_small_field_and_backprops():
    torch.manual_seed(0)
    unet = UNet(2, 1, channels=(8, 16, 32, 16, 8))
    vpa = VectorPyramidAggregation(2, unet.pyramid_channels, heads=(2, 2, 1), head_dim=4, radius=2)
    x = torch.rand(2, 1, 32, 32)
    feats = unet(x)
    phi = vpa(feats, feats)
    assert phi.shape == (2, 2, 32, 32)
    phi.abs().mean().backward()
    assert all(p.grad is not None for p in vpa.parameters())
