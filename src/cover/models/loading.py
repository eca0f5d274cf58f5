"""The one way from a checkpoint to a model, for every command and :func:`cover.load_pretrained`.

``cover finetune``, ``evaluate``, ``predict``, ``analyze``, ``register`` and ``export`` name a
checkpoint with ``--checkpoint``; each reads it here, so the same input gives the same result
or the same one-line :class:`cover.errors.CoverError` in every command. A checkpoint may be

* a ``cover pretrain`` run folder or its ``checkpoints/`` folder (the newest valid
  ``checkpoints/step_*.pt``);
* a ``cover finetune`` output folder (its ``best.pt``);
* a training checkpoint file (``step_*.pt``, ``best.pt``, ``last.pt``);
* a ``cover export`` folder, its ``cover.json`` or its weights file (``weights.safetensors``
  or ``weights.pt`` beside the ``cover.json``);
* a ``cover export --format nnunet`` file (``{"network_weights", "cover"}``: nnU-Net's weights
  with the export's description), read as an export.

:func:`read_checkpoint` finds and reads it into a :class:`Checkpoint` (its kind, metadata and
backbone weights); :func:`load_backbone` builds the pretrained backbone (finetune, analyze,
export, :func:`cover.load_pretrained`); :func:`load_finetuned` the fine-tuned network
(evaluate, predict); :func:`load_vector_model` the COVER model with its vector head (register).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cover.errors import CoverError

if TYPE_CHECKING:
    import torch
    from torch import nn

SIDECAR = "cover.json"
FINETUNE_FORMATS = ("cover-finetune/1", "cover-finetune-checkpoint/1")  # best/last.pt, checkpoints/step_*.pt
_WRAPPER_PARTS = ("module", "_orig_mod")  # added by DistributedDataParallel / torch.compile
KINDS = {
    "pretrain": "a cover pretrain checkpoint",
    "finetune": "a cover finetune checkpoint",
    "export": "a cover export (backbone weights only)",
}
GIVE = "give a cover pretrain run folder or checkpoint, a cover finetune output folder, or a cover export folder"


@dataclass
class Checkpoint:
    """A checkpoint as read from disk.

    Attributes:
        kind: ``pretrain``, ``finetune`` or ``export``.
        source: The file read (an export: its folder).
        metadata: Plain-JSON description (``backbone``, ``backbone_args``, ``spatial_dims``,
            ``in_channels``, ...): the checkpoint's ``metadata`` or the export's ``cover.json``.
        weights: The backbone's ``state_dict`` with plain keys (no ``backbone.``/``module.``/
            ``_orig_mod.``); an encoder-only export's holds the encoder only.
        state: The whole training checkpoint (``None`` for an export).
    """

    kind: str
    source: Path
    metadata: dict[str, Any]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def encoder_only(self) -> bool:
        """An encoder-only export: the decoder's weights are not in it."""
        return bool(self.metadata.get("encoder_only"))


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
    """The backbone's weights out of a model's ``state_dict`` (``backbone.*``, prefixes removed).

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
    kwargs = dict(metadata.get("backbone_args") or {})
    if "channels" in kwargs:
        kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
    return build_backbone(metadata["backbone"], int(metadata["spatial_dims"]), int(metadata["in_channels"]), **kwargs)


def resolve_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Load a training checkpoint given as a file, a run folder or its ``checkpoints/`` folder.

    Args:
        path: ``step_XXXXXXXX.pt``, ``OUT`` or ``OUT/checkpoints`` (the newest valid one); a
            ``cover finetune`` output folder without ``checkpoints/`` gives its ``best.pt``.

    Returns:
        ``(state, checkpoint_file)``.
    """
    from cover.engine.checkpoint import find_resume_checkpoint, list_checkpoints, load_checkpoint

    path = Path(path)
    if path.is_dir():
        run = path.parent if path.name == "checkpoints" else path
        if path.name != "checkpoints" and (run / "best.pt").is_file():
            return load_checkpoint(run / "best.pt"), run / "best.pt"  # a cover finetune output folder
        found = find_resume_checkpoint(run) if list_checkpoints(run) else None
        if found is None:
            raise CoverError(f"{path}: no checkpoint found (expected checkpoints/step_*.pt, best.pt or {SIDECAR})")
        return found[1], found[0]
    return load_checkpoint(path), path


def given_checkpoint(option: str | None, positional: str | None) -> str:
    """The checkpoint a command was given: ``--checkpoint``, or the older positional argument.

    Args:
        option: ``--checkpoint``'s value.
        positional: The positional argument's value (kept as an alias).

    Returns:
        The one checkpoint named.

    Raises:
        ConfigError: None given, or two different ones.
    """
    from cover.errors import ConfigError

    if option is not None and positional is not None and option != positional:
        raise ConfigError(f"checkpoint: given twice ({positional} and --checkpoint {option}); give --checkpoint only")
    chosen = option if option is not None else positional
    if chosen is None:
        raise ConfigError("checkpoint: required (--checkpoint PATH)")
    return chosen


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means an unusable file
        raise CoverError(f"{path}: not a readable weights file ({type(error).__name__})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CoverError(f"{path}: not a weights file (expected a state dict of tensors)")
    return weights


def _sidecar_of(path: Path) -> Path | None:
    """The ``cover.json`` a path names: an export folder, the file itself, or the weights beside it."""
    if path.is_dir():
        return path / SIDECAR if (path / SIDECAR).is_file() else None
    if path.name == SIDECAR:
        return path
    beside = path.parent / SIDECAR
    if path.suffix in (".safetensors", ".pt", ".pth") and beside.is_file():
        try:
            named = json.loads(beside.read_text()).get("weights")
        except (json.JSONDecodeError, AttributeError):
            return None
        return beside if named == path.name else None
    if path.suffix == ".safetensors" and path.is_file():
        raise CoverError(f"{path}: weights without their {SIDECAR}; give the folder cover export wrote")
    return None


def _read_export(sidecar: Path) -> Checkpoint:
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = f"{error.msg} at line {error.lineno}" if isinstance(error, json.JSONDecodeError) else "not text"
        raise CoverError(f"{sidecar}: invalid JSON ({reason})") from None
    if not isinstance(metadata, dict):
        raise CoverError(f"{sidecar}: not a cover export description (expected a JSON object)")
    weights_path = sidecar.parent / str(metadata.get("weights", "weights.safetensors"))
    if not weights_path.is_file():
        raise CoverError(f"{weights_path}: weights file named in {sidecar} not found")
    weights = {plain_key(k): v for k, v in _read_weights(weights_path).items()}
    return Checkpoint("export", sidecar.parent, metadata, weights)


def _read_nnunet_export(path: Path) -> Checkpoint | None:
    """A ``cover export --format nnunet`` file as an export, or ``None`` when ``path`` is not one."""
    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not loadable: the caller's error stands
        return None
    if not isinstance(content, dict) or not {"network_weights", "cover"} <= set(content):
        return None
    try:
        metadata = json.loads(content["cover"])
    except (TypeError, json.JSONDecodeError):
        return None
    weights = content["network_weights"]
    if not isinstance(metadata, dict) or not isinstance(weights, dict):
        return None
    return Checkpoint("export", path, metadata, {plain_key(k): v for k, v in weights.items()})


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Find and read a checkpoint of any kind (see the module docstring).

    Args:
        path: Run folder, ``checkpoints/`` folder, fine-tuning output folder, checkpoint file,
            export folder, its ``cover.json`` or its weights file.

    Returns:
        The checkpoint.

    Raises:
        CoverError: One line naming the path: not found, unreadable, or not a cover checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CoverError(f"{path}: checkpoint not found")
    sidecar = _sidecar_of(path)
    if sidecar is not None:
        return _read_export(sidecar)
    try:
        state, source = resolve_checkpoint(path)
    except CoverError:
        nnunet = _read_nnunet_export(path) if path.is_file() else None
        if nnunet is None:
            raise
        return nnunet
    metadata = state.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(state.get("model"), dict):
        raise CoverError(f"{source}: not a cover checkpoint (no model metadata); {GIVE}")
    weights = backbone_state_dict(state["model"])
    if not weights:
        raise CoverError(f"{source}: holds no backbone.* weights; not a cover checkpoint")
    kind = "finetune" if state.get("format") in FINETUNE_FORMATS else "pretrain"
    return Checkpoint(kind, source, dict(metadata), weights, state)


def _mismatch(source: Path, what: str, error: RuntimeError) -> CoverError:
    """One line for a ``load_state_dict`` failure: its first specific complaint."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith("Error(s) in loading")]
    first = (details or lines or [type(error).__name__])[0][:200]
    return CoverError(f"{source}: weights do not match the {what} its metadata describes ({first})")


def load_weights(backbone: nn.Module, checkpoint: Checkpoint) -> None:
    """Copy a checkpoint's backbone weights into ``backbone``: all of them, or an export's encoder.

    Args:
        backbone: A backbone built like the checkpoint's (:func:`build_from_metadata`).
        checkpoint: The checkpoint.

    Raises:
        CoverError: The weights do not fit (one line, the first mismatch).
    """
    encoder_only = checkpoint.encoder_only
    try:
        result = backbone.load_state_dict(checkpoint.weights, strict=not encoder_only)
    except RuntimeError as error:
        raise _mismatch(checkpoint.source, "backbone", error) from None
    if encoder_only:
        prefixes = encoder_prefixes(backbone)
        wrong = list(result.unexpected_keys) + [k for k in result.missing_keys if k.startswith(prefixes)]
        if wrong:
            raise CoverError(f"{checkpoint.source}: encoder-only weights do not match the backbone (e.g. {wrong[0]})")


def load_backbone(path: str | Path | Checkpoint, whole: bool = False) -> tuple[nn.Module, Checkpoint]:
    """The pretrained backbone of any checkpoint (pretraining, fine-tuning or export).

    Args:
        path: See :func:`read_checkpoint` (or an already read checkpoint).
        whole: The caller uses the decoder too: an encoder-only export is refused (one line)
            instead of coming back with a freshly initialised decoder.

    Returns:
        ``(backbone, checkpoint)``: the backbone maps ``(B, in_channels, *spatial)`` to its
        decoder pyramid, coarse to fine; it is in training mode, on the CPU.
    """
    checkpoint = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if whole and checkpoint.encoder_only:
        raise CoverError(
            f"{checkpoint.source}: an encoder-only export has no decoder weights, which this command uses; "
            "give the cover pretrain run folder or an export made without --encoder-only"
        )
    backbone = build_from_metadata(checkpoint.metadata)
    load_weights(backbone, checkpoint)
    return backbone, checkpoint


def pretrained_preset(metadata: dict[str, Any]) -> str | None:
    """The intensity preset a checkpoint was trained with (``None`` if unknown/auto)."""
    preset = metadata.get("preset") or (metadata.get("data") or {}).get("preset")
    return None if preset in (None, "", "auto", "per-file") else str(preset)


def _wrong_kind(checkpoint: Checkpoint, needs: str) -> CoverError:
    return CoverError(f"{checkpoint.source}: {KINDS[checkpoint.kind]}, but this command needs {needs}")


def build_network(task: str, spec: dict[str, Any], num_classes: int) -> nn.Module:
    """Network of a task from a backbone description.

    Args:
        task: ``seg`` or ``cls``.
        spec: ``backbone``, ``backbone_args``, ``spatial_dims``, ``in_channels``.
        num_classes: Output classes.

    Returns:
        :class:`SegmentationNet` or :class:`ClassificationNet`.
    """
    from cover.models.networks import ClassificationNet, SegmentationNet

    backbone = build_from_metadata(spec)
    return (SegmentationNet if task == "seg" else ClassificationNet)(backbone, num_classes)


def load_finetuned(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a fine-tuned network (backbone and task head) from its checkpoint alone.

    Args:
        path: A ``cover finetune`` output folder (its ``best.pt``) or checkpoint.
        device: Where the network goes.

    Returns:
        ``(network in eval mode, metadata)``.
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.kind != "finetune" or "task" not in checkpoint.metadata:
        raise _wrong_kind(checkpoint, "a cover finetune output folder or its best.pt (run cover finetune first)")
    metadata = checkpoint.metadata
    network = build_network(metadata["task"], metadata, int(metadata["num_classes"]))
    try:
        network.load_state_dict({plain_key(k): v for k, v in checkpoint.state["model"].items()})
    except RuntimeError as error:
        raise _mismatch(checkpoint.source, "network", error) from None
    return network.to(device).eval(), metadata


def load_vector_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any], Path]:
    """Rebuild a COVER model (backbone + vector head) from a pretraining checkpoint.

    Args:
        path: A ``cover pretrain`` run folder or checkpoint of the ``cover`` method.
        device: Where the model goes.

    Returns:
        ``(model in eval mode, checkpoint metadata, checkpoint file)``.
    """
    from cover.config import RENAMED_KEYS, resolve_pretrain_config
    from cover.models.networks import build_model

    checkpoint = read_checkpoint(path)
    needs = "the cover pretrain run folder or checkpoint of a cover model (its vector head)"
    if checkpoint.kind != "pretrain":
        raise _wrong_kind(checkpoint, needs)
    state, source = checkpoint.state, checkpoint.source
    if not isinstance(state.get("config"), dict):
        raise CoverError(f"{source}: checkpoint has no 'config'; use one written by cover pretrain")
    # A checkpoint of an older version names the intensity preset ``preset``: read silently.
    saved = {RENAMED_KEYS.get(k, k): v for k, v in state["config"].items() if k not in ("resume",)}
    config = resolve_pretrain_config(saved)
    if config.method != "cover":
        raise CoverError(f"{source}: method {config.method!r} has no vector head; this command needs {needs}")
    model = build_model(config)
    try:
        model.load_state_dict({plain_key(k): v for k, v in state["model"].items()})
    except RuntimeError as error:
        raise _mismatch(source, "model", error) from None
    metadata = dict(checkpoint.metadata)
    metadata.setdefault("spatial_dims", config.dim)
    metadata.setdefault("in_channels", config.in_channels)
    metadata.setdefault("data", {"preset": config.intensity, "spacing": config.spacing})
    metadata["divisor"] = int(model.backbone.divisor)
    metadata["slice_axis"] = config.slice_axis
    return model.to(device).eval(), metadata, source
