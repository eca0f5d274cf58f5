"""nnU-Net v2's own network as a COVER backbone (``--backbone nnunet``).

The network is the one nnU-Net trains for a dataset: its plans file (``nnUNetPlans.json``, a
ResEnc plans file such as ``nnUNetResEncUNetMPlans.json``, ...) and a configuration (``2d``,
``3d_fullres``, ...) name an architecture class and its arguments, and nnU-Net's own
``get_network_from_plans`` builds it (``dynamic_network_architectures``' ``PlainConvUNet``,
``ResidualEncoderUNet``, ...), with deep supervision off.

:class:`NnUNetPyramid` holds that network's ``encoder`` and ``decoder`` under their own names,
so its ``state_dict`` keys are nnU-Net's (``encoder.stages.0...``, ``decoder.encoder...``,
``decoder.stages...``, ``decoder.transpconvs...``, ``decoder.seg_layers...``). Its pyramid is
the bottleneck followed by the output of every decoder stage, coarse to fine: ``n_stages``
levels, the last at full resolution (nnU-Net's first stage has stride 1). Consecutive levels
differ by the plans' stride of that stage, which may be anisotropic (e.g. ``(1, 2, 2)``).
The segmentation layers (``decoder.seg_layers``, 1x1 convolutions to the classes) are outside
the pyramid: they are frozen at nnU-Net's initialisation and nnU-Net's
``load_pretrained_weights`` never transfers them.

The resolved architecture is stored in ``model.backbone_args["architecture"]`` (hence in every
checkpoint and export), so a run or export rebuilds without the plans file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError

#: ``model.backbone_args`` keys of the ``nnunet`` backbone.
NNUNET_ARGS = ("plans", "configuration", "architecture", "num_classes", "plans_name", "patch_size")
INSTALL_HINT = "--backbone nnunet needs nnU-Net v2: pip install 'cover[nnunet]' (or pip install nnunetv2)"
DEFAULT_CONFIGURATION = {2: "2d", 3: "3d_fullres"}


def _require_nnunet() -> None:
    try:
        import dynamic_network_architectures  # noqa: F401
        import nnunetv2  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def read_plans(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net v2 plans file.

    Args:
        path: ``nnUNetPlans.json`` (or another plans file) of ``nnUNet_preprocessed/DatasetXXX``.

    Returns:
        The plans as a dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: nnU-Net plans file not found")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON plans file ({error})") from None
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise ConfigError(f"{path}: not an nnU-Net v2 plans file (no 'configurations')")
    return plans


def architecture_from_plans(path: str | Path, configuration: str) -> dict[str, Any]:
    """The network a plans file describes for one configuration, resolved by nnU-Net itself.

    Args:
        path: Plans file.
        configuration: ``2d``, ``3d_fullres``, ``3d_lowres``, ... (inheritance resolved).

    Returns:
        ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}`` and ``patch_size``.
    """
    plans = read_plans(path)
    if configuration not in plans["configurations"]:
        allowed = ", ".join(plans["configurations"])
        raise ConfigError(f"{path}: has no configuration {configuration!r} (allowed: {allowed})")
    _require_nnunet()
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        manager = PlansManager(plans).get_configuration(configuration)
        architecture = {
            "network_class_name": manager.network_arch_class_name,
            "arch_kwargs": manager.network_arch_init_kwargs,
            "_kw_requires_import": list(manager.network_arch_init_kwargs_req_import),
        }
        patch_size = [int(p) for p in manager.patch_size]
    except (KeyError, TypeError, AttributeError) as error:
        raise ConfigError(
            f"{path}: configuration {configuration!r} has no 'architecture' entry nnU-Net v2 can read "
            f"(missing {error}); re-plan it with nnUNetv2_plan_experiment of nnU-Net >= 2.4"
        ) from None
    return {**architecture, "patch_size": patch_size, "plans_name": plans.get("plans_name")}


def _per_axis(value: Any, spatial_dims: int) -> tuple[int, ...]:
    return (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)


def architecture_dims(architecture: dict[str, Any]) -> int:
    """Spatial dimensions (2 or 3) of a resolved architecture, from its convolution class."""
    conv = str(architecture["arch_kwargs"].get("conv_op", ""))
    for dims in (2, 3):
        if conv.endswith(f"Conv{dims}d"):
            return dims
    raise ConfigError(f"nnU-Net architecture: conv_op {conv!r} is neither Conv2d nor Conv3d")


def stage_strides(architecture: dict[str, Any]) -> list[tuple[int, ...]]:
    """Per-stage strides of a resolved architecture (``n_stages`` entries, one value per axis)."""
    kwargs = architecture["arch_kwargs"]
    dims = architecture_dims(architecture)
    strides = kwargs.get("strides")
    if strides is None:
        raise ConfigError(
            f"nnU-Net architecture {architecture['network_class_name']} has no 'strides'; "
            "only U-Net architectures (PlainConvUNet, ResidualEncoderUNet, ...) are supported"
        )
    return [_per_axis(s, dims) for s in strides]


def pyramid_divisors(architecture: dict[str, Any]) -> tuple[int, ...]:
    """Per-axis factor every input size must be divisible by (product of all strides)."""
    strides = stage_strides(architecture)
    return tuple(math.prod(s[axis] for s in strides) for axis in range(len(strides[0])))


def default_heads(levels: int) -> tuple[int, ...]:
    """MoV heads per level for a pyramid of ``levels`` levels, coarse to fine.

    The rule of the paper's 5-level network (``[4, 4, 4, 1, 1]``): 4 heads on every level but
    the two finest, which get 1 (e.g. 6 stages give ``[4, 4, 4, 4, 1, 1]``).
    """
    return tuple([4] * max(0, levels - 2) + [1] * min(2, levels))


def resolve_backbone_args(backbone_args: dict[str, Any], dim: int) -> dict[str, Any]:
    """Fill ``model.backbone_args`` of an ``nnunet`` backbone from its plans file.

    Args:
        backbone_args: The user's ``plans`` (required unless ``architecture`` is given),
            ``configuration`` (default ``2d`` / ``3d_fullres`` by ``dim``), ``num_classes``.
        dim: The run's spatial dimensions.

    Returns:
        The arguments with ``architecture``, ``patch_size`` and ``plans_name`` filled in.
    """
    unknown = sorted(set(backbone_args) - set(NNUNET_ARGS))
    if unknown:
        raise ConfigError(
            f"model.backbone_args: {', '.join(unknown)} not accepted by the nnunet backbone "
            f"(allowed: {', '.join(NNUNET_ARGS)})"
        )
    args = dict(backbone_args)
    if "architecture" not in args:
        if not args.get("plans"):
            raise ConfigError(
                "--backbone nnunet needs --plans (an nnU-Net plans file, e.g. "
                "nnUNet_preprocessed/Dataset001_X/nnUNetPlans.json)"
            )
        args["configuration"] = str(args.get("configuration") or DEFAULT_CONFIGURATION[dim])
        args["plans"] = str(Path(args["plans"]).expanduser().resolve())
        resolved = architecture_from_plans(args["plans"], args["configuration"])
        args["patch_size"] = resolved.pop("patch_size")
        args["plans_name"] = resolved.pop("plans_name")
        args["architecture"] = resolved
    architecture = args["architecture"]
    dims = architecture_dims(architecture)
    if dims != dim:
        raise ConfigError(
            f"dim: {dim} does not match nnU-Net configuration {args.get('configuration')!r} ({dims}D); "
            f"pass --dim {dims} or another --configuration"
        )
    stage_strides(architecture)
    return args


class NnUNetPyramid(nn.Module):
    """An nnU-Net network (same modules, same ``state_dict`` keys) returning its decoder pyramid.

    Args:
        network: A ``dynamic_network_architectures`` U-Net (``encoder`` returning its skips,
            ``decoder`` with ``transpconvs``, ``stages`` and ``seg_layers``).
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        strides: Per-stage strides (first stage 1), one tuple per stage.

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        pyramid_channels: Widths of the bottleneck and of every decoder stage, coarse to fine.
        divisors: Per-axis factor input sizes must be divisible by.
        divisor: The largest of ``divisors`` (a multiple of each: strides are powers of 2).
    """

    encoder_prefixes = ("encoder.", "decoder.encoder.")

    def __init__(self, network: nn.Module, spatial_dims: int, in_channels: int, strides: Sequence[Sequence[int]]):
        super().__init__()
        decoder = getattr(network, "decoder", None)
        if not (
            isinstance(getattr(network, "encoder", None), nn.Module)
            and all(isinstance(getattr(decoder, name, None), nn.ModuleList) for name in ("transpconvs", "stages"))
        ):
            raise ConfigError(
                f"nnU-Net architecture {type(network).__name__} is not a U-Net with an encoder and a "
                "decoder of transposed convolutions and stages; it cannot serve as a pyramid backbone"
            )
        if list(network.named_parameters(recurse=False)) or list(network.named_buffers(recurse=False)):
            raise ConfigError(f"nnU-Net architecture {type(network).__name__} has weights outside its modules")
        if any(s != 1 for s in strides[0]):
            raise ConfigError(
                f"nnU-Net architecture: the first stage has stride {list(strides[0])}; the pyramid needs its "
                "finest level at full resolution (stride 1)"
            )
        for name, child in network.named_children():
            self.add_module(name, child)
        self.network_class = f"{type(network).__module__}.{type(network).__qualname__}"
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.strides = [tuple(int(v) for v in s) for s in strides]
        self.divisors = tuple(math.prod(s[axis] for s in self.strides) for axis in range(spatial_dims))
        self.divisor = max(self.divisors)
        widths = [int(c) for c in self.encoder.output_channels]
        self.pyramid_channels: tuple[int, ...] = tuple(widths[::-1])
        self.decoder.seg_layers.requires_grad_(False)

    def check_size(self, spatial: Sequence[int]) -> None:
        """Raise a one-line error unless every axis is divisible by the product of its strides.

        Args:
            spatial: Spatial size of an input.
        """
        spatial = tuple(int(s) for s in spatial)
        if any(s % d for s, d in zip(spatial, self.divisors, strict=True)):
            raise ConfigError(
                f"image size {spatial} must be divisible by {self.divisors} (the nnU-Net plans' strides "
                f"per axis); e.g. the configuration's patch size"
            )
        if math.prod(s // d for s, d in zip(spatial, self.divisors, strict=True)) < 2:
            raise ConfigError(f"image size {spatial} leaves one voxel at the bottleneck; use a larger size")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the decoder pyramid (nnU-Net's decoder without its segmentation layers).

        Args:
            x: ``(B, in_channels, *spatial)``, each axis divisible by ``divisors``.

        Returns:
            ``n_stages`` tensors, coarse to fine: ``(B, pyramid_channels[l], *S_l)``, the last at
            full resolution.
        """
        self.check_size(x.shape[2:])
        skips = self.encoder(x)
        pyramid = [skips[-1]]
        features = skips[-1]
        for index, (up, stage) in enumerate(zip(self.decoder.transpconvs, self.decoder.stages, strict=True)):
            features = stage(torch.cat((up(features), skips[-(index + 2)]), 1))
            pyramid.append(features)
        return pyramid


def build_nnunet_network(architecture: dict[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    """nnU-Net's network for a resolved architecture, built by nnU-Net (deep supervision off).

    Args:
        architecture: ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}``.
        in_channels: Image channels.
        num_classes: Segmentation outputs.

    Returns:
        The plain nnU-Net module (as ``nnUNetv2_train`` builds it).
    """
    _require_nnunet()
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    try:
        return get_network_from_plans(
            architecture["network_class_name"],
            architecture["arch_kwargs"],
            architecture["_kw_requires_import"],
            in_channels,
            num_classes,
            allow_init=True,
            deep_supervision=False,
        )
    except (ImportError, TypeError, AssertionError) as error:
        raise ConfigError(
            f"nnU-Net could not build {architecture['network_class_name']}: {' '.join(str(error).split())}"
        ) from None


def build_nnunet_pyramid(
    spatial_dims: int, in_channels: int, channels: Sequence[int] | None = None, **backbone_args: Any
) -> NnUNetPyramid:
    """Registry factory of ``--backbone nnunet``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        channels: Ignored (the widths come from the plans).
        **backbone_args: ``plans`` and ``configuration``, or a resolved ``architecture``;
            ``num_classes`` (outputs of the frozen segmentation layers, default 2).

    Returns:
        The backbone.
    """
    args = resolve_backbone_args(backbone_args, spatial_dims)
    architecture = args["architecture"]
    network = build_nnunet_network(architecture, in_channels, int(args.get("num_classes") or 2))
    return NnUNetPyramid(network, spatial_dims, in_channels, stage_strides(architecture))


def target_in_channels(plans: Path, default: int) -> int:
    """Input channels nnU-Net will use: ``channel_names`` of the ``dataset.json`` beside the plans."""
    dataset_json = plans.parent / "dataset.json"
    if dataset_json.is_file():
        try:
            names = json.loads(dataset_json.read_text(encoding="utf-8")).get("channel_names")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            names = None
        if isinstance(names, dict) and names:
            return len(names)
    return default


def check_against_plans(
    weights: dict[str, torch.Tensor], plans: str | Path, configuration: str, in_channels: int
) -> nn.Module:
    """Check that pretrained weights fit the network nnU-Net builds from ``plans``.

    Every key of nnU-Net's network except the segmentation layers (``.seg_layers.``) must be
    in ``weights`` with the same shape, and ``weights`` must hold no other non-segmentation
    key (what nnU-Net's ``load_pretrained_weights`` asserts, plus extra stages).

    Args:
        weights: Backbone ``state_dict`` (nnU-Net key names).
        plans: Target plans file.
        configuration: Target configuration.
        in_channels: Input channels to assume when no ``dataset.json`` sits beside the plans.

    Returns:
        The target network nnU-Net builds (untrained).

    Raises:
        ConfigError: One line naming the first differing layer and both shapes.
    """
    plans = Path(plans).expanduser()
    architecture = architecture_from_plans(plans, configuration)
    network = build_nnunet_network(architecture, target_in_channels(plans, in_channels), 2)
    target = {k: v for k, v in network.state_dict().items() if ".seg_layers." not in k}
    where = f"{plans} ({configuration})"
    for key, tensor in target.items():
        if key not in weights:
            raise ConfigError(
                f"plans mismatch: layer {key} {list(tensor.shape)} of {where} is not in the pretrained weights "
                "(the run was planned with fewer stages or another architecture)"
            )
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"plans mismatch: layer {key} is {list(weights[key].shape)} in the pretrained weights and "
                f"{list(tensor.shape)} in {where}"
            )
    extra = [k for k in weights if k not in target and ".seg_layers." not in k]
    if extra:
        raise ConfigError(
            f"plans mismatch: layer {extra[0]} {list(weights[extra[0]].shape)} of the pretrained weights is not in "
            f"{where} (the run was planned with more stages or another architecture)"
        )
    return network
