import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import cover
from cover.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from cover.errors import ConfigError, CoverError
from cover.models.export import backbone_state_dict, export, load_pretrained, plain_key
from cover.nn.unet import UNet
from cover.pretraining.pretrain import pretrain

UNET_CHANNELS = [8, 16, 32, 16, 8]
MONAI_CHANNELS = [4, 8, 8, 16, 16, 16, 8, 8, 4]


def tiny_run(out, model):
    pretrain(
        out=str(out),
        dim=2,
        size=32,
        batch_size=2,
        steps=2,
        lr=3e-3,
        warmup_steps=1,
        eval_pairs=1,
        seed=3,
        model=model,
    )
    return list_checkpoints(out)[-1]


@pytest.fixture(scope="module")
def unet_checkpoint(tmp_path_factory):
    return tiny_run(
        tmp_path_factory.mktemp("unet") / "run", {"channels": UNET_CHANNELS, "heads": [2, 2, 1], "head_dim": 4}
    )


@pytest.fixture(scope="module")
def monai_checkpoint(tmp_path_factory):
    model = {
        "backbone": "monai-basicunet",
        "channels": MONAI_CHANNELS,
        "heads": [2, 2, 2, 1, 1],
        "head_dim": 4,
        "backbone_args": {"out_channels": 4},
    }
    return tiny_run(tmp_path_factory.mktemp("monai") / "run", model)


def trained_backbone_weights(checkpoint):
    state = load_checkpoint(checkpoint)
    return {k.removeprefix("backbone."): v for k, v in state["model"].items() if k.startswith("backbone.")}


def test_export_loads_strictly_into_a_fresh_unet_with_equal_outputs(unet_checkpoint, tmp_path):
    folder = export(unet_checkpoint, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.yaml", "cover.json", "weights.safetensors"]
    weights = load_file(str(folder / "weights.safetensors"))
    assert all(not k.startswith(("backbone.", "module.", "_orig_mod.", "head.")) for k in weights)
    expected = trained_backbone_weights(unet_checkpoint)
    assert weights.keys() == expected.keys()
    fresh = UNet(2, 1, UNET_CHANNELS)
    fresh.load_state_dict(weights, strict=True)
    reference = UNet(2, 1, UNET_CHANNELS)
    reference.load_state_dict(expected, strict=True)
    x = torch.randn(2, 1, 32, 32)
    for ours, theirs in zip(fresh(x), reference(x)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    meta = json.loads((folder / "cover.json").read_text())
    assert meta["method"] == "cover" and meta["backbone"] == "unet"
    assert meta["backbone_args"] == {"channels": UNET_CHANNELS}
    assert meta["spatial_dims"] == 2 and meta["in_channels"] == 1
    assert meta["patch_size"] == [32, 32] and meta["training_steps"] == 2
    assert meta["preset"] == "mri" and meta["orientation"] == "RAS" and meta["axis_order"]
    assert len(meta["spacing"]) == 2 and meta["pyramid_channels"] == [32, 16, 8]
    assert meta["cover_version"] == cover.__version__ and meta["citation"] == cover.CITATION
    assert meta["encoder_only"] is False and meta["weights"] == "weights.safetensors"
    assert meta["parameters"] == sum(p.numel() for p in fresh.parameters())


def test_torch_format_and_encoder_only(unet_checkpoint, tmp_path):
    assert cover.load_pretrained is load_pretrained  # the public API, after cover.models.export was imported
    folder = cover.export(unet_checkpoint, tmp_path / "encoder", format="torch", encoder_only=True)
    weights = torch.load(folder / "weights.pt", weights_only=True)
    expected = trained_backbone_weights(unet_checkpoint)
    assert weights and all(k.startswith("encoder.") for k in weights)
    assert weights.keys() == {k for k in expected if k.startswith("encoder.")}
    backbone, meta = load_pretrained(folder)
    assert meta["encoder_only"] is True
    state = backbone.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value) == key.startswith("encoder."), key


def test_load_pretrained_from_folder_checkpoint_and_run(unet_checkpoint, tmp_path):
    folder = export(unet_checkpoint, tmp_path / "export", format="torch")
    x = torch.randn(1, 1, 32, 32)
    outputs = []
    for source in (folder, folder / "cover.json", unet_checkpoint, unet_checkpoint.parent.parent):
        backbone, meta = load_pretrained(source)
        assert isinstance(backbone, UNet) and meta["backbone"] == "unet" and meta["training_steps"] == 2
        backbone.eval()
        with torch.no_grad():
            outputs.append(backbone(x)[-1])
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=0, atol=0)


def test_monai_export_loads_into_plain_basic_unet(monai_checkpoint, tmp_path):
    from monai.networks.nets import BasicUNet

    folder = export(monai_checkpoint, tmp_path / "monai")
    meta = json.loads((folder / "cover.json").read_text())
    args = meta["monai"]["args"]
    assert meta["monai"]["class"] == "monai.networks.nets.BasicUNet"
    assert args == {"spatial_dims": 2, "in_channels": 1, "out_channels": 4, "features": [4, 8, 8, 16, 16, 4]}
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=4, features=(4, 8, 8, 16, 16, 4))
    net.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
    net.eval()
    backbone, _ = load_pretrained(folder)
    backbone.eval()
    x = torch.randn(2, 1, 32, 32)
    found = {}
    names = ("down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1")
    for name in names:
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out))
    with torch.no_grad():
        net(x)
        pyramid = backbone(x)
    for name, ours in zip(names, pyramid):
        torch.testing.assert_close(found[name], ours, rtol=0, atol=0)
    encoder = export(monai_checkpoint, tmp_path / "monai_encoder", encoder_only=True)
    keys = load_file(str(encoder / "weights.safetensors")).keys()
    assert keys and all(k.startswith(("conv_0.", "down_")) for k in keys)


def test_wrapper_prefixes_are_removed(unet_checkpoint, tmp_path):
    assert plain_key("module._orig_mod.backbone.encoder.0.0.weight") == "backbone.encoder.0.0.weight"
    assert plain_key("backbone._orig_mod.decoder.1.3.bias") == "backbone.decoder.1.3.bias"
    state = load_checkpoint(unet_checkpoint)
    state["model"] = {f"module._orig_mod.{k}": v for k, v in state["model"].items()}
    wrapped = tmp_path / "wrapped.pt"
    save_checkpoint(state, wrapped)
    assert backbone_state_dict(state["model"]).keys() == trained_backbone_weights(unet_checkpoint).keys()
    folder = export(wrapped, tmp_path / "export")
    UNet(2, 1, UNET_CHANNELS).load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)


def test_refusals_are_one_line_errors(unet_checkpoint, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export(unet_checkpoint, taken)
    with pytest.raises(ConfigError, match="format"):
        export(unet_checkpoint, tmp_path / "x", format="onnx")
    with pytest.raises(CoverError, match="checkpoint not found"):
        export(tmp_path / "missing.pt", tmp_path / "y")
    with pytest.raises(CoverError, match="no checkpoint found"):
        load_pretrained(tmp_path)
    assert (taken / "keep.txt").read_text() == "mine"


def test_cli_export(unet_checkpoint, tmp_path):
    from cover.cli.console import app

    result = CliRunner().invoke(
        app, ["export", str(unet_checkpoint), "--out", str(tmp_path / "cli"), "--format", "torch"]
    )
    assert result.exit_code == 0, result.output
    assert "exported" in result.output and (tmp_path / "cli" / "weights.pt").is_file()
