import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from cover.errors import ConfigError
from cover.nn.unet import UNet


@pytest.mark.parametrize("dim,size", [(2, 32), (3, 16)])
def test_pyramid_shapes_and_channels(dim, size):
    net = UNet(dim, 2, channels=(4, 8, 16, 32, 64, 32, 16, 8, 4))
    pyramid = net(torch.rand(1, 2, *[size] * dim))
    assert [f.shape[1] for f in pyramid] == [64, 32, 16, 8, 4] == list(net.pyramid_channels)
    assert [f.shape[2] for f in pyramid] == [size // 16, size // 8, size // 4, size // 2, size]


def test_default_channels_parameter_count_2d():
    assert sum(p.numel() for p in UNet(2).parameters()) == 7_851_936


def test_size_not_divisible_gives_clear_error():
    with pytest.raises(ConfigError, match="divisible by 16"):
        UNet(2)(torch.rand(1, 1, 40, 40))


def reference_pyramid(net: UNet, x: torch.Tensor) -> list[torch.Tensor]:
    """docs/method.md's U-Net written out with functional operations and the module's weights:
    per block two (3x3[x3] convolution, GroupNorm with C/8 groups, LeakyReLU 0.2); 2x max-pool
    down; (bi/tri)linear up-sampling with voxel centres aligned to the pooling (align_corners
    False), then [up-sampled, skip] concatenated along the channels."""
    dim = x.dim() - 2
    conv = (F.conv2d, F.conv3d)[dim - 2]
    pool = (F.max_pool2d, F.max_pool3d)[dim - 2]
    mode = ("bilinear", "trilinear")[dim - 2]

    def block(module, h):
        for c, n in ((module[0], module[1]), (module[3], module[4])):
            h = conv(h, c.weight, c.bias, padding=1)
            h = F.group_norm(h, c.out_channels // 8, n.weight, n.bias, eps=1e-5)
            h = torch.where(h > 0, h, 0.2 * h)
        return h

    skips = []
    for index, module in enumerate(net.encoder):
        x = block(module, x if index == 0 else pool(x, 2))
        skips.append(x)
    pyramid = [x]
    for level, module in enumerate(net.decoder):
        skip = skips[-2 - level]
        up = F.interpolate(x, size=skip.shape[2:], mode=mode, align_corners=False)
        x = block(module, torch.cat([up, skip], dim=1))
        pyramid.append(x)
    return pyramid


@pytest.mark.parametrize("dim,size", [(2, 16), (3, 8)])
def test_pyramid_matches_the_functional_reference(dim, size):
    torch.manual_seed(0)
    net = UNet(dim, 2, channels=(8, 16, 32, 16, 8))
    for module in net.modules():  # non-trivial GroupNorm affine parameters and conv biases
        if isinstance(module, torch.nn.GroupNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    x = torch.randn(2, 2, *[size] * dim)
    with torch.no_grad():
        pyramid, expected = net(x), reference_pyramid(net, x)
    assert len(pyramid) == len(expected) == 3
    for got, want in zip(pyramid, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_authors_init_is_kaiming_with_relu_gain_and_default_biases():
    """``init: authors``: weights N(0, 2 / fan_in) (Kaiming, ``a = 0``) and PyTorch's default biases
    (uniform in ±1/sqrt(fan_in)); ``cover``: gain for slope 0.2 (std 1.9 % lower) and zero biases."""
    import math

    def pooled(net):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        net.requires_grad_(False)
        fan_ins = [m.weight[0].numel() for m in convs]
        weights = torch.cat([m.weight.flatten() * math.sqrt(f / 2) for m, f in zip(convs, fan_ins, strict=True)])
        biases = torch.cat([m.bias * math.sqrt(f) for m, f in zip(convs, fan_ins, strict=True)])
        return float(weights.std()), biases

    torch.manual_seed(0)
    std, biases = pooled(UNet(2, 1, init="authors"))
    assert abs(std - 1.0) < 0.003
    assert float(biases.abs().max()) <= 1.0 and float(biases.std()) == pytest.approx(1 / math.sqrt(3), abs=0.03)
    std, biases = pooled(UNet(2, 1))
    assert abs(std - 1 / math.sqrt(1.04)) < 0.003 and not biases.any()
    with pytest.raises(ConfigError, match="init: 'he' is not allowed"):
        UNet(2, 1, init="he")
