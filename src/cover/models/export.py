"""Weight export and loading: :func:`cover.export` (``cover export``) and :func:`cover.load_pretrained`.

An export folder holds

* ``weights.safetensors`` (or ``weights.pt``): the backbone's ``state_dict`` only, with plain
  module keys (no ``backbone.``, ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``)
  prefixes, no optimizer state, no COVER head), loadable with
  ``safetensors.torch.load_file`` or ``torch.load(..., weights_only=True)``;
* ``cover.json``: what a user needs to rebuild and feed the network (method, backbone and
  its arguments, spatial dims, input channels, intensity preset, spacing, orientation and
  axis order, patch size, training steps, versions, the paper citation; for
  ``monai-basicunet`` the exact ``monai.networks.nets.BasicUNet`` arguments);
* ``config.yaml``: the pretraining run's resolved configuration;
* ``README.md``: a short card with loading snippets.

With ``encoder_only`` only the encoder's weights are written (``encoder.*`` for the built-in
U-Net; ``conv_0``, ``down_1`` … ``down_4`` for ``monai-basicunet``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cover
from cover.errors import ConfigError, CoverError
from cover.models.loading import (  # noqa: F401 - re-exported: the export's own names for these
    SIDECAR,
    backbone_state_dict,
    build_from_metadata,
    encoder_prefixes,
    given_checkpoint,
    load_backbone,
    plain_key,
    read_checkpoint,
    resolve_checkpoint,
)

if TYPE_CHECKING:
    from torch import nn

# torch and the model code are imported inside the functions so that importing this module is fast.

EXPORT_FORMAT = "cover-export/1"
FORMATS = {"safetensors": "weights.safetensors", "torch": "weights.pt"}


def describe(state: dict[str, Any], source: Path, backbone: nn.Module) -> dict[str, Any]:
    """The sidecar metadata (``cover.json``) of a training checkpoint.

    Args:
        state: A ``cover pretrain`` checkpoint.
        source: Its path.
        backbone: The backbone built from it (for pyramid channels and MONAI arguments).

    Returns:
        A plain-JSON dict.
    """
    meta = dict(state.get("metadata") or {})
    data = dict(meta.get("data") or {})
    spacing = data.get("spacing")
    if spacing is None and len(data.get("spacings") or []) == 1:  # checkpoints written before spacing_note
        spacing = data["spacings"][0]
    description = {
        "format": EXPORT_FORMAT,
        "method": meta.get("method"),
        "backbone": meta.get("backbone"),
        "backbone_args": meta.get("backbone_args") or {},
        "spatial_dims": meta.get("spatial_dims"),
        "in_channels": meta.get("in_channels"),
        "channel_names": meta.get("channel_names") or data.get("channel_names"),
        "pyramid_channels": list(backbone.pyramid_channels),
        "divisor": int(backbone.divisor),
        "preset": data.get("preset"),
        "spacing": spacing,
        "spacing_note": data.get("spacing_note"),
        "orientation": data.get("orientation"),
        "axis_order": data.get("axis_order")
        or "array axis order: tensors are (B, C, H, W) in 2D and (B, C, D, H, W) in 3D",
        "patch_size": meta.get("patch_size"),
        "training_steps": int(state.get("step", 0)),
        "cover_version": meta.get("cover_version"),
        "exported_with": cover.__version__,
        "citation": cover.CITATION,
        "source_checkpoint": str(source),
        "data": data,
    }
    monai_args = getattr(backbone, "monai_args", None)
    if monai_args is not None:
        description["monai"] = {"class": "monai.networks.nets.BasicUNet", "args": monai_args}
    return description


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"out: {out} is not empty; choose another --out or pass --overwrite")


def _readme(description: dict[str, Any], weights: str) -> str:
    loader = (
        f"from safetensors.torch import load_file\nstate = load_file('{weights}')"
        if weights.endswith(".safetensors")
        else f"import torch\nstate = torch.load('{weights}', weights_only=True)"
    )
    lines = [
        f"# cover export: {description['method']} pretrained {description['backbone']}",
        "",
        f"{description['spatial_dims']}D, {description['in_channels']} input channel(s), intensity preset "
        f"`{description['preset']}`, patch size {description['patch_size']}, "
        f"{description['training_steps']} training steps. Full details in `cover.json`.",
        "",
        "```python",
        "import cover",
        "backbone, meta = cover.load_pretrained('.')  # returns the decoder pyramid, coarse to fine",
        "```",
        "",
        "```python",
        loader,
    ]
    strict = "False)  # encoder only" if description.get("encoder_only") else "True)"
    if "monai" in description:
        lines += [
            "from monai.networks.nets import BasicUNet",
            f"net = BasicUNet(**{description['monai']['args']!r})",
            f"net.load_state_dict(state, strict={strict}",
        ]
    elif description["backbone"] == "unet":
        channels = description["backbone_args"].get("channels")
        lines += [
            "from cover.nn.unet import UNet",
            f"net = UNet({description['spatial_dims']}, {description['in_channels']}, {channels})",
            f"net.load_state_dict(state, strict={strict}",
        ]
    lines += ["```", "", f"Please cite: {description['citation']}", ""]
    return "\n".join(lines)


def export(
    checkpoint: str | Path,
    out: str | Path,
    format: str = "safetensors",  # noqa: A002 - the CLI option's name
    encoder_only: bool = False,
    overwrite: bool = False,
    plans: str | Path | None = None,
    configuration: str | None = None,
) -> Path:
    """Write a checkpoint's backbone weights and their ``cover.json`` sidecar.

    Args:
        checkpoint: A ``cover pretrain`` checkpoint, run folder or ``checkpoints/`` folder.
        out: Export folder (created; must be empty unless ``overwrite``); for ``nnunet`` the
            ``.pth`` file (see :func:`export_nnunet`).
        format: ``safetensors``, ``torch`` or ``nnunet``.
        encoder_only: Write only the encoder's weights.
        overwrite: Allow a non-empty ``out``.
        plans: ``nnunet`` only: the target plans file to check against.
        configuration: ``nnunet`` only: the target configuration.

    Returns:
        The export folder (the file for ``nnunet``).

    Examples:
        The demo backbone of :func:`cover.pretrain`'s example as ``weights.safetensors`` and
        ``cover.json``:

        >>> import cover
        >>> print(cover.export("runs/demo", "exports/demo"))
        exports/demo
    """
    import torch

    from cover.config import save_yaml

    if format == "nnunet":
        if encoder_only:
            raise ConfigError("--encoder-only: nnU-Net's load_pretrained_weights needs the whole network")
        return export_nnunet(checkpoint, out, plans=plans, configuration=configuration, overwrite=overwrite)
    if plans or configuration:
        raise ConfigError("--plans/--configuration apply to --format nnunet only")
    if format not in FORMATS:
        raise ConfigError(f"format: {format!r} is not allowed (allowed: {', '.join(FORMATS)}, nnunet)")
    out = Path(out)
    _check_out(out, overwrite)
    loaded = read_checkpoint(checkpoint)
    if loaded.kind == "export":
        raise CoverError(f"{loaded.source}: already a cover export; export from the cover pretrain run folder")
    backbone, _ = load_backbone(loaded)  # proves the export rebuilds
    state, source, weights = loaded.state, loaded.source, loaded.weights
    if encoder_only:
        prefixes = encoder_prefixes(backbone)
        weights = {k: v for k, v in weights.items() if k.startswith(prefixes)}
    description = describe(state, source, backbone)
    name = FORMATS[format]
    description.update(
        weights=name,
        weights_format=format,
        encoder_only=encoder_only,
        tensors=len(weights),
        parameters=int(sum(v.numel() for v in weights.values())),
    )
    out.mkdir(parents=True, exist_ok=True)
    if format == "safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(out / name), metadata={"format": "pt", "cover": json.dumps(description)})
    else:
        torch.save(weights, out / name)
    description["sha256"] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / SIDECAR).write_text(json.dumps(description, indent=2) + "\n")
    if isinstance(state.get("config"), dict):
        save_yaml(state["config"], out / "config.yaml")
    (out / "README.md").write_text(_readme(description, name))
    return out


def export_nnunet(
    checkpoint: str | Path,
    out: str | Path,
    plans: str | Path | None = None,
    configuration: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``--backbone nnunet`` run as a file ``nnUNetv2_train -pretrained_weights`` loads.

    The file is ``torch.save({"network_weights": state_dict, "cover": json})``: nnU-Net's own
    key names, every weight of the network (the segmentation layers too, which nnU-Net skips).
    Before writing, the weights are checked against the network nnU-Net builds from the target
    plans (``plans``/``configuration``; default: the run's own plans file when it still exists),
    so a mismatch is a one-line error naming the first differing layer and both shapes.

    Args:
        checkpoint: A ``cover pretrain --backbone nnunet`` checkpoint, run folder or ``checkpoints/``.
        out: The ``.pth`` file to write (an existing file only with ``overwrite``).
        plans: Target plans file (``nnUNet_preprocessed/DatasetXXX/nnUNetPlans.json``).
        configuration: Target configuration (default: the run's).
        overwrite: Replace an existing ``out``.

    Returns:
        The written file.
    """
    import torch

    from cover.nn.nnunet_backbone import check_against_plans

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"out: {out} is a folder; --format nnunet writes one file (e.g. {out / 'cover.pth'})")
    if out.exists() and not overwrite:
        raise ConfigError(f"out: {out} exists; choose another --out or pass --overwrite")
    state, source = resolve_checkpoint(checkpoint)
    metadata = dict(state.get("metadata") or {})
    if metadata.get("backbone") != "nnunet":
        raise ConfigError(
            f"{source}: --format nnunet needs a run pretrained with --backbone nnunet "
            f"(this one used {metadata.get('backbone')!r})"
        )
    weights = backbone_state_dict(state["model"])
    backbone = build_from_metadata(metadata)
    try:
        backbone.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise CoverError(f"{source}: weights do not match the backbone its metadata describes ({error})") from None
    args = dict(metadata.get("backbone_args") or {})
    configuration = configuration or args.get("configuration")
    if plans is None and args.get("plans") and Path(args["plans"]).is_file():
        plans = args["plans"]  # the run's own plans, when still there: catches a re-planned dataset
    if plans is not None:
        check_against_plans(weights, plans, str(configuration), int(metadata["in_channels"]))
    weights = backbone.state_dict()  # nnU-Net's key order; decoder.encoder.* shares encoder.*'s tensors
    unique = {id(t): t for t in backbone.state_dict(keep_vars=True).values()}
    description = describe(state, source, backbone)
    description.update(
        weights=out.name,
        weights_format="nnunet",
        encoder_only=False,
        tensors=len(weights),
        parameters=int(sum(t.numel() for t in unique.values())),
        nnunet={"plans": str(plans) if plans else None, "configuration": configuration},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save({"network_weights": weights, "cover": json.dumps(description)}, partial)
    partial.replace(out)
    return out


def load_pretrained(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained backbone, ready to use, and its metadata.

    Args:
        path: An export folder (or its ``cover.json``), a training checkpoint, a run folder
            or its ``checkpoints/`` folder (the newest valid checkpoint).

    Returns:
        ``(backbone, metadata)``: the backbone maps ``(B, in_channels, *spatial)`` to its
        decoder pyramid, coarse to fine (``metadata["pyramid_channels"]``); ``metadata`` is the
        ``cover.json`` content. For an encoder-only export the decoder keeps its fresh
        initialisation.

    Examples:
        The export of :func:`cover.export`'s example; the backbone returns its decoder pyramid:

        >>> import cover, torch
        >>> backbone, metadata = cover.load_pretrained("exports/demo")
        >>> pyramid = backbone(torch.zeros(1, 1, 32, 32))
        >>> [tuple(level.shape) for level in pyramid]
        [(1, 512, 2, 2), (1, 256, 4, 4), (1, 128, 8, 8), (1, 64, 16, 16), (1, 32, 32, 32)]
        >>> metadata["pyramid_channels"], metadata["spatial_dims"]
        ([512, 256, 128, 64, 32], 2)
    """
    backbone, loaded = load_backbone(path)
    if loaded.kind == "export":
        return backbone, loaded.metadata
    metadata = describe(loaded.state, loaded.source, backbone)
    metadata.update(encoder_only=False)
    return backbone, metadata
