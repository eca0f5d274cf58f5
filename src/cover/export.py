"""Weight export and loading: ``cover export`` and :func:`cover.load_pretrained`.

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
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import cover
from cover.errors import ConfigError, CoverError

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch and the model code are imported inside the functions so that registering the
# ``cover export`` command keeps ``cover --help`` fast.

EXPORT_FORMAT = "cover-export/1"
SIDECAR = "cover.json"
FORMATS = {"safetensors": "weights.safetensors", "torch": "weights.pt"}
_WRAPPER_PARTS = ("module", "_orig_mod")  # added by DistributedDataParallel / torch.compile


def plain_key(key: str) -> str:
    """A state-dict key without DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.`` parts.

    Args:
        key: E.g. ``module._orig_mod.backbone.encoder.0.0.weight``.

    Returns:
        E.g. ``backbone.encoder.0.0.weight``.
    """
    parts = [p for p in key.split(".") if p != "_orig_mod"]
    while parts and parts[0] in _WRAPPER_PARTS:
        parts.pop(0)
    return ".".join(parts)


def backbone_state_dict(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's weights out of a method's ``state_dict`` (``backbone.*``, prefixes removed).

    Args:
        model_state: A checkpoint's ``"model"`` entry (keys ``backbone.*`` and ``head.*``).

    Returns:
        Plain backbone keys to CPU tensors (contiguous copies, no shared storage).
    """
    weights = {}
    for key, value in model_state.items():
        key = plain_key(key)
        if key.startswith("backbone."):
            weights[plain_key(key.removeprefix("backbone."))] = value.detach().cpu().contiguous().clone()
    return weights


def encoder_prefixes(backbone: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of a backbone's encoder.

    Args:
        backbone: A registered backbone.

    Returns:
        Its ``encoder_prefixes`` attribute, else ``("encoder.",)`` when it has an ``encoder``.
    """
    from torch import nn

    prefixes = getattr(backbone, "encoder_prefixes", None)
    if prefixes:
        return tuple(prefixes)
    if isinstance(getattr(backbone, "encoder", None), nn.Module):
        return ("encoder.",)
    raise CoverError(f"encoder_only: the {type(backbone).__name__} backbone has no known encoder part")


def _backbone_kwargs(metadata: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(metadata.get("backbone_args") or {})
    if "channels" in kwargs:
        kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
    return kwargs


def build_from_metadata(metadata: dict[str, Any]) -> nn.Module:
    """Build the (untrained) backbone a checkpoint or export describes.

    Args:
        metadata: Needs ``backbone``, ``backbone_args``, ``spatial_dims``, ``in_channels``.

    Returns:
        The backbone module.
    """
    from cover.nn.backbones import build_backbone

    missing = [k for k in ("backbone", "spatial_dims", "in_channels") if k not in metadata]
    if missing:
        raise CoverError(f"metadata lacks {', '.join(missing)}; not written by cover pretrain or cover export")
    return build_backbone(
        metadata["backbone"], int(metadata["spatial_dims"]), int(metadata["in_channels"]), **_backbone_kwargs(metadata)
    )


def resolve_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Load a training checkpoint given as a file, a run folder or its ``checkpoints/`` folder.

    Args:
        path: ``step_XXXXXXXX.pt``, ``OUT`` or ``OUT/checkpoints`` (the newest valid one).

    Returns:
        ``(state, checkpoint_file)``.
    """
    from cover.train.checkpoint import find_resume_checkpoint, load_checkpoint

    path = Path(path)
    if path.is_dir():
        run = path.parent if path.name == "checkpoints" else path
        found = find_resume_checkpoint(run)
        if found is None:
            raise CoverError(f"{path}: no checkpoint found (expected checkpoints/step_*.pt)")
        return found[1], found[0]
    return load_checkpoint(path), path


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
) -> Path:
    """Write a checkpoint's backbone weights and their ``cover.json`` sidecar.

    Args:
        checkpoint: A ``cover pretrain`` checkpoint, run folder or ``checkpoints/`` folder.
        out: Export folder (created; must be empty unless ``overwrite``).
        format: ``safetensors`` or ``torch``.
        encoder_only: Write only the encoder's weights.
        overwrite: Allow a non-empty ``out``.

    Returns:
        The export folder.
    """
    import torch

    from cover.config import save_yaml

    if format not in FORMATS:
        raise ConfigError(f"format: {format!r} is not allowed (allowed: {', '.join(FORMATS)})")
    out = Path(out)
    _check_out(out, overwrite)
    state, source = resolve_checkpoint(checkpoint)
    weights = backbone_state_dict(state["model"])
    if not weights:
        raise CoverError(f"{source}: holds no backbone.* weights; not a cover pretrain checkpoint")
    backbone = build_from_metadata(dict(state.get("metadata") or {}))
    try:
        backbone.load_state_dict(weights, strict=True)  # proves the export rebuilds
    except RuntimeError as error:
        raise CoverError(f"{source}: weights do not match the backbone its metadata describes ({error})") from None
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


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means an unusable file
        raise CoverError(f"{path}: not a readable weights file ({type(error).__name__})") from None


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
    """
    path = Path(path)
    sidecar = path / SIDECAR if path.is_dir() else path if path.name == SIDECAR else None
    if sidecar is not None and sidecar.is_file():
        try:
            metadata = json.loads(sidecar.read_text())
        except json.JSONDecodeError as error:
            raise CoverError(f"{sidecar}: invalid JSON ({error.msg} at line {error.lineno})") from None
        weights_path = sidecar.parent / str(metadata.get("weights", FORMATS["safetensors"]))
        if not weights_path.is_file():
            raise CoverError(f"{weights_path}: weights file named in {sidecar} not found")
        weights = _read_weights(weights_path)
        backbone = build_from_metadata(metadata)
    else:
        state, source = resolve_checkpoint(path)
        weights = backbone_state_dict(state["model"])
        if not weights:
            raise CoverError(f"{source}: holds no backbone.* weights; not a cover pretrain checkpoint")
        backbone = build_from_metadata(dict(state.get("metadata") or {}))
        metadata = describe(state, source, backbone)
        metadata.update(encoder_only=False)
    encoder_only = bool(metadata.get("encoder_only"))
    try:
        result = backbone.load_state_dict(weights, strict=not encoder_only)
    except RuntimeError as error:
        raise CoverError(f"{path}: weights do not match the backbone in its metadata ({error})") from None
    if encoder_only:
        prefixes = encoder_prefixes(backbone)
        wrong = list(result.unexpected_keys) + [k for k in result.missing_keys if k.startswith(prefixes)]
        if wrong:
            raise CoverError(f"{path}: encoder-only weights do not match the backbone (e.g. {wrong[0]})")
    return backbone, metadata


def register(app: typer.Typer) -> None:
    """Add ``cover export`` to the CLI."""

    @app.command("export")
    def export_command(
        checkpoint: Annotated[
            str, typer.Argument(help="Checkpoint file, or a pretrain run folder (newest checkpoint).")
        ],
        out: Annotated[str, typer.Option(help="Export folder (must be empty unless --overwrite).")],
        format: Annotated[str, typer.Option(help="safetensors or torch.")] = "safetensors",  # noqa: A002
        encoder_only: Annotated[bool, typer.Option("--encoder-only", help="Export only the encoder.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty --out.")] = False,
    ) -> None:
        """Export pretrained backbone weights (no optimizer, no head) with a cover.json sidecar."""
        folder = export(checkpoint, out, format=format, encoder_only=encoder_only, overwrite=overwrite)
        meta = json.loads((folder / SIDECAR).read_text())
        print(
            f"exported {meta['tensors']} tensors ({meta['parameters']:,} parameters) of the {meta['backbone']} "
            f"backbone to {folder / meta['weights']} with {folder / SIDECAR}"
        )


class _CallableModule(types.ModuleType):
    """The module ``cover.export``, callable as the function :func:`export`.

    Importing the module binds it to the name ``cover.export``, which would shadow the lazily
    resolved public function of the same name; calling the module calls :func:`export`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
