import numpy as np
import pytest
import torch

from _support import oracles
from cover.nn.mov_reference import loop_mov
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


class LinearResidual(torch.nn.Module):
    """Stands in for a MoV level: a residual field read off both inputs' first channels."""

    def __init__(self, spatial_dims: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.ndim, self.alpha, self.beta = spatial_dims, alpha, beta
        self.seen_a: list[torch.Tensor] = []

    def forward(self, feat_b, feat_a):
        self.seen_a.append(feat_a.detach().clone())
        return self.alpha * feat_a[:, : self.ndim] + self.beta * feat_b[:, self.ndim : 2 * self.ndim]

    def numpy(self, feat_b: np.ndarray, feat_a: np.ndarray) -> np.ndarray:
        return self.alpha * feat_a[: self.ndim] + self.beta * feat_b[self.ndim : 2 * self.ndim]


def smooth_pyramid(batch, channels, sizes, seed):
    """Random features varying over a few voxels (field magnitudes of about one voxel)."""
    generator = torch.Generator().manual_seed(seed)
    levels = []
    for c, s in zip(channels, sizes, strict=True):
        coarse = torch.randn(batch, c, *[max(2, n // 2) for n in s], generator=generator)
        mode = "bilinear" if len(s) == 2 else "trilinear"
        levels.append(torch.nn.functional.interpolate(coarse, size=s, mode=mode, align_corners=True))
    return levels


@pytest.mark.parametrize(
    "sizes",
    [[(4, 5), (8, 10), (16, 20)], [(3, 3, 4), (6, 6, 8), (12, 12, 16)]],
    ids=["2d", "3d"],
)
def test_vpa_of_spatially_varying_level_fields_matches_the_level_by_level_reference(sizes):
    """Spatially varying residuals make order, pre-warp of view a and last-level composition
    matter (constant fields commute); the NumPy reference writes out docs/method.md's loop."""
    ndim = len(sizes[0])
    channels = (2 * ndim + 1,) * 3
    vpa = VectorPyramidAggregation(ndim, channels, heads=(1, 1, 1), head_dim=4, radius=1)
    stubs = [LinearResidual(ndim, 1.2, 0.8), LinearResidual(ndim, -1.0, 1.1), LinearResidual(ndim, 1.5, -0.9)]
    for level, stub in enumerate(stubs):
        vpa.levels[level] = stub
    pyramid_a, pyramid_b = smooth_pyramid(2, channels, sizes, 0), smooth_pyramid(2, channels, sizes, 1)
    with torch.no_grad():
        phi = vpa(pyramid_a, pyramid_b)
    for b in range(2):
        expected = oracles.vpa_reference(
            lambda level, fb, ka: stubs[level].numpy(fb, ka),
            [f[b].double().numpy() for f in pyramid_a],
            [f[b].double().numpy() for f in pyramid_b],
        )
        np.testing.assert_allclose(phi[b].numpy(), expected, atol=1e-4)
    assert float(phi.abs().mean()) > 1.0  # fields of several voxels: the composition is exercised
    # The coarsest level reads view a's raw features; finer levels read them pre-warped.
    torch.testing.assert_close(stubs[0].seen_a[0], pyramid_a[0])
    assert not torch.allclose(stubs[1].seen_a[0], pyramid_a[1], atol=0.1)


def test_vpa_with_mov_levels_matches_the_loop_mov_reference():
    """The real levels (projection + MoV) inside the aggregation, against loop_mov in the reference."""
    torch.manual_seed(0)
    channels, sizes = (12, 8, 6), [(4, 4), (8, 8), (16, 16)]
    vpa = VectorPyramidAggregation(2, channels, heads=(2, 2, 1), head_dim=4, radius=1)
    pyramid_a, pyramid_b = smooth_pyramid(1, channels, sizes, 2), smooth_pyramid(1, channels, sizes, 3)

    def residual(level, fb, ka):
        mov = vpa.levels[level]
        q = mov.project(torch.from_numpy(fb).float()[None])
        k = mov.project(torch.from_numpy(ka).float()[None])
        return loop_mov(q, k, mov.heads, mov.radius)[0].double().numpy()

    with torch.no_grad():
        phi = vpa(pyramid_a, pyramid_b)
        expected = oracles.vpa_reference(
            residual, [f[0].double().numpy() for f in pyramid_a], [f[0].double().numpy() for f in pyramid_b]
        )
    np.testing.assert_allclose(phi[0].numpy(), expected, atol=1e-4)
    assert float(phi.abs().max()) > 1.0


def test_every_level_of_the_vpa_receives_gradient():
    torch.manual_seed(0)
    unet = UNet(2, 1, channels=(8, 16, 32, 16, 8))
    vpa = VectorPyramidAggregation(2, unet.pyramid_channels, heads=(2, 2, 1), head_dim=4, radius=2)
    x = torch.rand(2, 1, 32, 32)
    phi = vpa(unet(x), unet(torch.roll(x, 2, dims=-1)))
    phi.abs().mean().backward()
    for name, parameter in vpa.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
