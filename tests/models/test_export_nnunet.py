"""``cover export --format nnunet``: a COVER-pretrained nnU-Net network that nnU-Net itself loads.

The plans file is the one nnU-Net's planner wrote (see ``tests/nn/test_nnunet_backbone.py``).
"""

import json
import shutil

import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.run.load_pretrained_weights import load_pretrained_weights  # noqa: E402

from _support.cli import run_cli  # noqa: E402
from _support.nnunet import CONFIGURATIONS, PLANS, nnunet_network  # noqa: E402
from cover.engine.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from cover.errors import ConfigError, CoverError  # noqa: E402
from cover.models.export import export, load_pretrained  # noqa: E402
from cover.pretraining.pretrain import pretrain  # noqa: E402


@pytest.fixture(scope="module", params=[2, 3])
def nnunet_run(request, tmp_path_factory):
    dim = request.param
    out = tmp_path_factory.mktemp(f"nnunet{dim}d") / "run"
    pretrain(
        out=str(out),
        dim=dim,
        size=32 if dim == 2 else 16,
        batch_size=2,
        steps=2,
        lr=3e-3,
        warmup_steps=1,
        eval_pairs=1,
        seed=3,
        model={"backbone": "nnunet", "head_dim": 4, "window_radius": 1, "backbone_args": {"plans": str(PLANS)}},
    )
    return dim, out


def test_nnunets_load_pretrained_weights_transfers_every_trained_weight(nnunet_run, tmp_path):
    dim, run = nnunet_run
    path = export(run, tmp_path / "cover.pth", format="nnunet")
    trained = {
        k.removeprefix("backbone."): v
        for k, v in load_checkpoint(list_checkpoints(run)[-1])["model"].items()
        if k.startswith("backbone.")
    }
    torch.manual_seed(123)
    network = nnunet_network(dim, deep_supervision=True)  # what nnUNetv2_train builds: 3 outputs
    before = {k: v.clone() for k, v in network.state_dict().items()}
    load_pretrained_weights(network, str(path))
    after = network.state_dict()
    kept = [k for k in after if ".seg_layers." not in k]
    assert len(kept) > 50 and all(".seg_layers." in k for k in set(after) - set(kept))
    for key in kept:  # every encoder/decoder tensor is the pretrained one (decoder.encoder.* too)
        assert torch.equal(
            after[key], trained[key.removeprefix("decoder.") if key.startswith("decoder.encoder.") else key]
        )
    assert any(not torch.equal(before[k], after[k]) for k in kept if k.endswith("weight"))
    for key in set(after) - set(kept):  # nnU-Net's own segmentation layers stay as nnU-Net built them
        assert torch.equal(after[key], before[key])
    meta = json.loads(torch.load(path, weights_only=True)["cover"])
    assert (
        meta["in_channels"] == 1
        and meta["backbone"] == "nnunet"
        and meta["nnunet"]["configuration"] == (CONFIGURATIONS[dim])
    )
    # cover's own loader rebuilds the same network from a run without the plans file
    backbone, _ = load_pretrained(run)
    assert all(torch.equal(backbone.state_dict()[k], trained[k]) for k in trained)


def test_load_pretrained_reads_the_nnunet_export_file(nnunet_run, tmp_path):
    dim, run = nnunet_run
    path = export(run, tmp_path / "cover.pth", format="nnunet")
    from_file, meta = load_pretrained(path)
    from_run, _ = load_pretrained(run)
    assert meta["backbone"] == "nnunet" and meta["in_channels"] == 1 and meta["spatial_dims"] == dim
    assert from_file.state_dict().keys() == from_run.state_dict().keys()
    assert all(torch.equal(v, from_run.state_dict()[k]) for k, v in from_file.state_dict().items())
    x = torch.randn(1, 1, *(32 if dim == 2 else 16,) * dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(from_file.eval()(x), from_run.eval()(x), strict=True))
    torch.save({"network_weights": torch.load(path, weights_only=True)["network_weights"]}, tmp_path / "bare.pth")
    with pytest.raises(CoverError, match=r"bare.pth: not a cover checkpoint") as error:
        load_pretrained(tmp_path / "bare.pth")  # nnU-Net weights without the cover description
    assert "\n" not in str(error.value)


def test_trained_decoder_encoder_alias_equals_the_encoder(nnunet_run):
    _, run = nnunet_run
    trained = load_checkpoint(list_checkpoints(run)[-1])["model"]
    aliases = [k for k in trained if k.startswith("backbone.decoder.encoder.")]
    assert aliases and all(torch.equal(trained[k], trained[k.replace("decoder.encoder.", "encoder.")]) for k in aliases)


def edited_plans(tmp_path, edit):
    folder = tmp_path / "Dataset001_Tiny"
    folder.mkdir()
    plans = json.loads(PLANS.read_text())
    edit(plans)
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    shutil.copy(PLANS.parent / "dataset.json", folder / "dataset.json")
    return folder / "nnUNetPlans.json"


def test_a_plans_mismatch_names_the_first_differing_layer_and_both_shapes(nnunet_run, tmp_path):
    dim, run = nnunet_run
    configuration = CONFIGURATIONS[dim]

    def wider(plans):
        plans["configurations"][configuration]["architecture"]["arch_kwargs"]["features_per_stage"][0] = 48

    target = edited_plans(tmp_path, wider)
    kernel = [3] * dim
    with pytest.raises(ConfigError) as error:
        export(run, tmp_path / "x.pth", format="nnunet", plans=target)
    assert str(error.value) == (
        f"plans mismatch: layer encoder.stages.0.0.convs.0.conv.weight is {[32, 1, *kernel]} in the pretrained "
        f"weights and {[48, 1, *kernel]} in {target} ({configuration})"
    )
    assert not (tmp_path / "x.pth").exists()


def test_a_dataset_with_other_channels_is_a_mismatch_of_the_first_convolution(nnunet_run, tmp_path):
    dim, run = nnunet_run
    target = edited_plans(tmp_path, lambda plans: None)
    dataset = json.loads(target.with_name("dataset.json").read_text())
    dataset["channel_names"] = {"0": "T1", "1": "T2"}
    target.with_name("dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(ConfigError, match=r"encoder.stages.0.0.convs.0.conv.weight is \[32, 1, 3.*\[32, 2, 3"):
        export(run, tmp_path / "x.pth", format="nnunet", plans=target)


def test_fewer_stages_in_the_target_plans_name_the_first_decoder_stage(nnunet_run, tmp_path):
    dim, run = nnunet_run
    configuration = CONFIGURATIONS[dim]

    def shallower(plans):
        kwargs = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
        kwargs["n_stages"] = 3
        for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
            kwargs[key] = kwargs[key][:3]
        kwargs["n_conv_per_stage_decoder"] = kwargs["n_conv_per_stage_decoder"][:2]

    # nnU-Net's first decoder stage now merges stage 2 (128) with the 64-wide skip
    kernel = [3] * dim
    with pytest.raises(ConfigError) as error:
        export(run, tmp_path / "x.pth", format="nnunet", plans=edited_plans(tmp_path, shallower))
    assert str(error.value).startswith(
        f"plans mismatch: layer decoder.stages.0.convs.0.conv.weight is {[128, 256, *kernel]} in the pretrained "
        f"weights and {[64, 128, *kernel]} in "
    )


def test_cli_export_nnunet_and_its_errors(nnunet_run, tmp_path, monkeypatch, capsys):
    _, run = nnunet_run
    out = tmp_path / "cover.pth"
    code, _ = run_cli(["export", run, "--format", "nnunet", "--out", out], monkeypatch, capsys)
    assert code == 0 and "network_weights" in torch.load(out, weights_only=True)
    code, errors = run_cli(["export", run, "--format", "nnunet", "--out", out], monkeypatch, capsys)
    assert code == 2 and errors == [f"error: out: {out} exists; choose another --out or pass --overwrite"]
    code, errors = run_cli(["export", run, "--format", "nnunet", "--out", tmp_path, "--overwrite"], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and "is a folder" in errors[0]
    code, errors = run_cli(["export", run, "--out", tmp_path / "e", "--plans", PLANS], monkeypatch, capsys)
    assert code == 2 and errors == ["error: --plans/--configuration apply to --format nnunet only"]


def test_format_nnunet_refuses_another_backbone(tmp_path):
    run = tmp_path / "unet"
    pretrain(
        out=str(run),
        dim=2,
        size=32,
        batch_size=2,
        steps=1,
        eval_pairs=1,
        model={"channels": [8, 16, 8], "heads": [1, 1]},
    )
    with pytest.raises(ConfigError, match="needs a run pretrained with --backbone nnunet .this one used 'unet'"):
        export(run, tmp_path / "x.pth", format="nnunet")


def test_weights_the_target_network_lacks_are_a_mismatch_too(nnunet_run, tmp_path):
    dim, run = nnunet_run
    configuration = CONFIGURATIONS[dim]

    def no_affine_norm(plans):
        plans["configurations"][configuration]["architecture"]["arch_kwargs"]["norm_op_kwargs"]["affine"] = False

    target = edited_plans(tmp_path, no_affine_norm)
    with pytest.raises(ConfigError) as error:
        export(run, tmp_path / "x.pth", format="nnunet", plans=target)
    assert str(error.value) == (
        f"plans mismatch: layer encoder.stages.0.0.convs.0.norm.weight [32] of the pretrained weights is not in "
        f"{target} ({configuration}) (the run was planned with more stages or another architecture)"
    )
