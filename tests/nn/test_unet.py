import pytest
import torch

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
