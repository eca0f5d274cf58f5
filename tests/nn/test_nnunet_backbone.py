"""``--backbone nnunet``: nnU-Net's own network, built from a plans file nnU-Net's planner wrote.

``tests/nn/data/nnunet_tiny/nnUNetPlans.json`` (and its ``dataset.json``) were produced by
nnU-Net 2.8.1's planner on the synthetic dataset of ``tests/_support/nnunet.py``
(4 cases of 32^3 voxels, 1 mm, 3 labels), with ``nnUNet_raw``/``nnUNet_preprocessed``/
``nnUNet_results`` under ``/tmp/nnu`` (``nnUNetv2_plan_and_preprocess -d 1 --no_pp -np 1``)::

    cd tests && python -c "from pathlib import Path; from _support.nnunet import write_raw_dataset, plan; \
        root = Path('/tmp/nnu'); write_raw_dataset(root / 'nnUNet_raw'); print(plan(root))"
"""

import copy
import json

import pytest
import torch

pytest.importorskip("nnunetv2")

from _support.nnunet import CONFIGURATIONS, PLANS, nnunet_network  # noqa: E402
from cover.config import resolve_pretrain_config  # noqa: E402
from cover.errors import ConfigError  # noqa: E402
from cover.nn.backbones import build_backbone  # noqa: E402
from cover.nn.nnunet_backbone import NnUNetPyramid, default_heads, resolve_backbone_args  # noqa: E402
from cover.nn.vpa import VectorPyramidAggregation  # noqa: E402


@pytest.mark.parametrize("dim", [2, 3])
def test_backbone_is_nnunets_network_and_its_last_level_feeds_nnunets_output(dim):
    torch.manual_seed(0)
    backbone = build_backbone("nnunet", dim, 2, plans=str(PLANS), configuration=CONFIGURATIONS[dim], num_classes=3)
    reference = nnunet_network(dim, in_channels=2)
    # nnU-Net's own key names and shapes, in nnU-Net's order
    assert [(k, v.shape) for k, v in backbone.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    reference.load_state_dict(backbone.state_dict())
    backbone.eval()
    reference.eval()
    size = (32, 24, 16)[:dim] if dim == 3 else (32, 24)
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        pyramid = backbone(x)
        expected = reference(x)
    # widths of the plans' stages, coarse to fine, each stage's stride (2) between levels
    assert backbone.pyramid_channels == (256, 128, 64, 32)
    assert [tuple(f.shape) for f in pyramid] == [
        (2, c, *(s // 2 ** (3 - level) for s in size)) for level, c in enumerate((256, 128, 64, 32))
    ]
    # the finest level through nnU-Net's last segmentation layer is nnU-Net's own output
    torch.testing.assert_close(backbone.decoder.seg_layers[-1](pyramid[-1]), expected, rtol=0, atol=0)
    # the bottleneck is the encoder's last stage
    with torch.no_grad():
        torch.testing.assert_close(pyramid[0], reference.encoder(x)[-1], rtol=0, atol=0)
    assert not any(p.requires_grad for p in backbone.decoder.seg_layers.parameters())
    assert backbone.divisors == (8,) * dim and backbone.divisor == 8


def anisotropic_architecture():
    """The 3D plans with the first down-sampling in-plane only (as nnU-Net plans thick slices)."""
    args = resolve_backbone_args({"plans": str(PLANS), "configuration": "3d_fullres"}, 3)
    architecture = copy.deepcopy(args["architecture"])
    architecture["arch_kwargs"]["strides"] = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    architecture["arch_kwargs"]["kernel_sizes"] = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    return architecture


def test_anisotropic_strides_give_per_axis_levels_and_a_full_resolution_field():
    torch.manual_seed(0)
    backbone = build_backbone("nnunet", 3, 1, architecture=anisotropic_architecture())
    assert backbone.divisors == (4, 8, 8)
    x = torch.randn(1, 1, 12, 16, 24)
    pyramid = backbone(x)
    assert [tuple(f.shape[2:]) for f in pyramid] == [(3, 2, 3), (6, 4, 6), (12, 8, 12), (12, 16, 24)]
    head = VectorPyramidAggregation(3, backbone.pyramid_channels, (2, 2, 1, 1), head_dim=4, radius=1)
    field = head(pyramid, pyramid)
    assert field.shape == (1, 3, 12, 16, 24)
    with pytest.raises(ConfigError, match=r"divisible by \(4, 8, 8\)"):
        backbone(torch.randn(1, 1, 10, 16, 24))


def test_a_resized_level_keeps_displacements_in_voxels_of_the_finer_grid():
    # one coarse level with a constant field: after the (1, 2, 2) step it must read (1x, 2x, 2x)
    from cover.geometry import resize_field

    phi = torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1, 1).expand(1, 3, 3, 2, 3)
    finer = resize_field(phi, (3, 4, 6))
    torch.testing.assert_close(finer[0, :, 1, 2, 3], torch.tensor([1.0, 2.0, 2.0]))


@pytest.mark.parametrize(("levels", "heads"), [(4, (4, 4, 1, 1)), (5, (4, 4, 4, 1, 1)), (7, (4, 4, 4, 4, 4, 1, 1))])
def test_default_heads_follow_the_papers_five_level_rule(levels, heads):
    assert default_heads(levels) == heads


def test_config_takes_levels_heads_and_patch_size_from_the_plans():
    config = resolve_pretrain_config(
        {"dim": 3, "model": {"backbone": "nnunet", "backbone_args": {"plans": str(PLANS)}}}
    )
    assert config.model.heads == (4, 4, 1, 1)
    assert config.size == (32, 32, 32)
    assert config.model.backbone_args["configuration"] == "3d_fullres"
    assert config.model.backbone_args["architecture"]["network_class_name"].endswith("PlainConvUNet")
    given = resolve_pretrain_config(
        {
            "dim": 2,
            "size": 16,
            "model": {"backbone": "nnunet", "heads": [2, 2, 2, 1], "backbone_args": {"plans": str(PLANS)}},
        }
    )
    assert given.model.heads == (2, 2, 2, 1) and given.size == (16, 16)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dim": 3, "model": {"backbone": "nnunet"}}, "needs --plans"),
        (
            {"dim": 3, "model": {"backbone": "nnunet", "backbone_args": {"plans": "nope.json"}}},
            "nope.json: nnU-Net plans",
        ),
        (
            {
                "dim": 3,
                "model": {"backbone": "nnunet", "backbone_args": {"plans": str(PLANS), "configuration": "3d_lowres"}},
            },
            "no configuration '3d_lowres' .allowed: 2d, 3d_fullres",
        ),
        (
            {
                "dim": 2,
                "model": {"backbone": "nnunet", "backbone_args": {"plans": str(PLANS), "configuration": "3d_fullres"}},
            },
            "dim: 2 does not match nnU-Net configuration '3d_fullres' .3D.",
        ),
        (
            {"dim": 3, "size": 20, "model": {"backbone": "nnunet", "backbone_args": {"plans": str(PLANS)}}},
            "multiples of 8",
        ),
        (
            {"dim": 3, "model": {"backbone": "nnunet", "heads": [4, 1, 1], "backbone_args": {"plans": str(PLANS)}}},
            r"model.heads: needs one entry per pyramid level \(4\)",
        ),
        ({"dim": 3, "model": {"backbone_args": {"plans": str(PLANS)}}}, "need --backbone nnunet"),
    ],
)
def test_bad_nnunet_settings_are_one_line_errors(values, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve_pretrain_config(values)
    assert "\n" not in str(error.value)


def test_a_plans_file_that_is_not_json_names_the_file(tmp_path):
    bad = tmp_path / "plans.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="plans.json: not a JSON plans file"):
        resolve_backbone_args({"plans": str(bad)}, 3)
    bad.write_text(json.dumps({"plans_name": "x"}))
    with pytest.raises(ConfigError, match="not an nnU-Net v2 plans file"):
        resolve_backbone_args({"plans": str(bad)}, 3)


def test_pyramid_refuses_a_first_stage_that_downsamples():
    architecture = anisotropic_architecture()
    architecture["arch_kwargs"]["strides"][0] = [1, 2, 2]
    with pytest.raises(ConfigError, match="first stage has stride"):
        build_backbone("nnunet", 3, 1, architecture=architecture)
    assert isinstance(build_backbone("nnunet", 3, 1, architecture=anisotropic_architecture()), NnUNetPyramid)
