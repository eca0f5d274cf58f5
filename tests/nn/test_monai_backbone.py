import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

from cover.errors import ConfigError
from cover.nn.backbones import build_backbone
from cover.nn.monai_backbone import BasicUNetPyramid, features_from_channels

CHANNELS = (4, 8, 8, 16, 16, 16, 8, 8, 4)
LEVELS = ("down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1")


def hooked_features(net: BasicUNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Bottleneck and decoder outputs of a plain BasicUNet, read with forward hooks."""
    found = {}
    handles = [
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out))
        for name in LEVELS
    ]
    net(x)
    for handle in handles:
        handle.remove()
    return [found[name] for name in LEVELS]


@pytest.mark.parametrize("dim", [2, 3])
def test_pyramid_equals_plain_basic_unet_features(dim):
    torch.manual_seed(0)
    backbone = build_backbone("monai-basicunet", dim, 2, channels=CHANNELS, out_channels=3)
    assert isinstance(backbone, BasicUNetPyramid) and isinstance(backbone, BasicUNet)
    assert backbone.spatial_dims == dim and backbone.in_channels == 2 and backbone.divisor == 16
    assert backbone.pyramid_channels == (16, 16, 8, 8, 4)
    x = torch.randn(2, 2, *([32] * dim))
    pyramid = backbone(x)
    assert [tuple(f.shape) for f in pyramid] == [
        (2, c, *([32 // 2 ** (4 - level)] * dim)) for level, c in enumerate(backbone.pyramid_channels)
    ]
    plain = BasicUNet(**backbone.monai_args)
    assert backbone.monai_args == {
        "spatial_dims": dim,
        "in_channels": 2,
        "out_channels": 3,
        "features": [4, 8, 8, 16, 16, 4],
    }
    plain.load_state_dict(backbone.state_dict(), strict=True)
    for ours, theirs in zip(pyramid, hooked_features(plain, x)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_channels_map_to_features_and_bad_inputs_are_one_line_errors():
    assert features_from_channels((32, 64, 128, 256, 512, 256, 128, 64, 32)) == (32, 64, 128, 256, 512, 32)
    with pytest.raises(ConfigError, match="model.channels"):
        features_from_channels((8, 16, 32, 16, 8))
    with pytest.raises(ConfigError, match="mirroring"):
        features_from_channels((4, 8, 8, 16, 16, 8, 8, 8, 4))
    with pytest.raises(ConfigError, match="not accepted by monai-basicunet"):
        build_backbone("monai-basicunet", 2, 1, channels=CHANNELS, kernel_size=5)
    backbone = build_backbone("monai-basicunet", 2, 1, channels=CHANNELS)
    with pytest.raises(ConfigError, match="divisible by 16"):
        backbone(torch.zeros(1, 1, 40, 32))
    with pytest.raises(ConfigError, match="at least 32"):
        backbone(torch.zeros(1, 1, 16, 32))
    # With batch norm instead of instance norm a 16-voxel axis is fine.
    batch_norm = build_backbone("monai-basicunet", 2, 1, channels=CHANNELS, norm="batch")
    assert batch_norm(torch.zeros(2, 1, 16, 32))[-1].shape == (2, 4, 16, 32)


def test_final_conv_is_frozen_and_encoder_view():
    backbone = build_backbone("monai-basicunet", 2, 1, channels=CHANNELS)
    frozen = [name for name, p in backbone.named_parameters() if not p.requires_grad]
    assert frozen == ["final_conv.weight", "final_conv.bias"]
    encoder_params = {id(p) for p in backbone.encoder.parameters()}
    expected = {id(p) for name, p in backbone.named_parameters() if name.startswith(backbone.encoder_prefixes)}
    assert encoder_params == expected


@pytest.mark.slow
def test_cover_pretraining_with_basic_unet_learns(tmp_path):
    from cover.engine.checkpoint import list_checkpoints, load_checkpoint
    from cover.engine.logger import read_log
    from cover.pretraining.pretrain import pretrain

    torch.manual_seed(0)
    initial = build_backbone("monai-basicunet", 2, 1, channels=CHANNELS).state_dict()  # the run's init (seed 0)
    out = tmp_path / "run"
    pretrain(
        out=str(out),
        dim=2,
        size=32,
        batch_size=4,
        steps=30,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        eval_pairs=4,
        model={"backbone": "monai-basicunet", "channels": list(CHANNELS), "heads": [2, 2, 2, 1, 1], "head_dim": 4},
    )
    log = read_log(out / "log.csv")
    first, last = np.mean(log["loss_vec"][:4]), np.mean(log["loss_vec"][-4:])
    assert last < 0.85 * first, (first, last)
    state = load_checkpoint(list_checkpoints(out)[-1])
    # final_conv is not trained: it keeps its (seeded) initialisation; the rest moved.
    for name in ("final_conv.weight", "final_conv.bias"):
        torch.testing.assert_close(state["model"][f"backbone.{name}"], initial[name], rtol=0, atol=0)
    assert not torch.equal(state["model"]["backbone.conv_0.conv_0.conv.weight"], initial["conv_0.conv_0.conv.weight"])
    assert state["metadata"]["backbone"] == "monai-basicunet"
    assert state["metadata"]["backbone_args"]["channels"] == list(CHANNELS)
