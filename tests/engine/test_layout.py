import copy

import pytest
import torch

from cover.config import resolve_pretrain_config
from cover.engine.layout import channels_last_format, use_channels_last
from cover.pretraining.pretrain import build_model, source_size
from cover.views import ViewGenerator

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


def test_format_per_dimension():
    assert channels_last_format(2) is torch.channels_last
    assert channels_last_format(3) is torch.channels_last_3d
    with pytest.raises(ValueError, match="2 or 3"):
        channels_last_format(1)


@pytest.mark.parametrize("dim,size", [(2, 32), (3, 16)])
def test_channels_last_cover_step_equals_the_default_layout(dim, size):
    """The whole COVER loss (U-Net, VPA, MoV, losses) and every gradient, in both layouts."""
    torch.manual_seed(0)
    config = resolve_pretrain_config({"dim": dim, "size": size, "batch_size": 2, "model": TINY_MODEL})
    plain = build_model(config)
    converted = use_channels_last(copy.deepcopy(plain), dim)
    weights = [p for p in converted.parameters() if p.dim() == dim + 2]
    assert weights and all(p.is_contiguous(memory_format=channels_last_format(dim)) for p in weights)
    assert any(not p.is_contiguous() for p in weights if p.shape[1] > 1)  # really re-laid out
    source = torch.rand(2, 1, *source_size(config), generator=torch.Generator().manual_seed(1))
    views = ViewGenerator(config.views, config.size)(source, torch.Generator().manual_seed(2))
    losses = {}
    for name, model in (("plain", plain), ("channels_last", converted)):
        out = model(views)
        out["loss"].backward()
        losses[name] = {k: v.item() for k, v in out.items()}
    for key, value in losses["plain"].items():
        assert losses["channels_last"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for (name, a), b in zip(plain.named_parameters(), converted.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_weights_load_into_the_default_layout():
    torch.manual_seed(0)
    config = resolve_pretrain_config({"dim": 2, "size": 32, "model": TINY_MODEL})
    converted = use_channels_last(build_model(config), 2)
    plain = build_model(config)
    plain.load_state_dict(converted.state_dict())
    for (name, a), b in zip(plain.state_dict().items(), converted.state_dict().values(), strict=True):
        assert a.is_contiguous() and torch.equal(a, b), name
