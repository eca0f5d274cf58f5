"""One contract for every registered pretraining method, in 2D and 3D."""

import io

import pytest
import torch

from cover.config import ModelConfig
from cover.errors import ConfigError
from cover.methods import METHODS, build_method
from cover.methods.scratch import SCRATCH
from cover.nn.backbones import build_backbone
from cover.views import ViewConfig, ViewGenerator

TINY = ModelConfig(channels=(8, 16, 32, 16, 8), heads=(2, 2, 1), head_dim=4, window_radius=1)
SMALL_OPTIONS = {"dense-infonce": {"num_pixels": 32, "hidden_dim": 16, "proj_dim": 8}, "simclr": {"hidden_dim": 16}}
PRETRAINING = sorted(name for name in METHODS if name != SCRATCH)


def tiny_method(name, dim, seed=0):
    torch.manual_seed(seed)
    backbone = build_backbone("unet", dim, 1, channels=TINY.channels)
    return build_method(name, backbone, TINY, SMALL_OPTIONS.get(name, {}))


def tiny_views(dim, batch=2):
    size = (32, 32) if dim == 2 else (16, 16, 16)
    generator = torch.Generator().manual_seed(3)
    source = torch.rand((batch, 1, *(s + 8 for s in size)), generator=generator)
    config = ViewConfig(rotation_deg=10, num_rotations=1, scale_range=(0.9, 1.1), translation=0.05, shear_deg=2)
    return ViewGenerator(config, size)(source, generator)


def test_the_builtin_methods_are_registered():
    assert {"cover", "dense-infonce", "simclr", "scratch"} <= set(METHODS)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("name", PRETRAINING)
def test_method_contract(name, dim):
    method = tiny_method(name, dim)
    views = tiny_views(dim)
    losses = method(views)
    loss = losses["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss), losses
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    loss.backward()
    first_conv = method.backbone.encoder[0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(k.startswith(("backbone.", "head.")) for k in method.state_dict())

    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = tiny_method(name, dim, seed=123)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    method.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(method(views)["loss"], restored(views)["loss"])


def test_scratch_has_nothing_to_pretrain():
    with pytest.raises(ConfigError, match="no pretraining"):
        tiny_method(SCRATCH, 2)


@pytest.mark.parametrize("name", ["dense-infonce", "simclr"])
def test_unknown_option_is_a_one_line_error(name):
    backbone = build_backbone("unet", 2, 1, channels=TINY.channels)
    with pytest.raises(ConfigError, match="unknown method_options.*temperture"):
        build_method(name, backbone, TINY, {"temperture": 0.1})
