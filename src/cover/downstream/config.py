"""Typed configuration of ``cover finetune``: fields, defaults, validation with one-line messages.

The same names work in a YAML file (``--config``), on the command line and in
:func:`cover.finetune`. Defaults depend on whether data is given: without ``images`` and
``datalist`` the built-in MNI152 tissue demo is used (:mod:`cover.data.demo.tissue`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cover.config import (
    DEFAULT_CHANNELS,
    Data,
    Device,
    Loop,
    check_choices,
    lift_model_keys,
    load_yaml,
    to_dict,
    update_dataclass,
)
from cover.devices import fill_device_defaults
from cover.engine.schedule import LR_SCHEDULES
from cover.errors import ConfigError
from cover.options import documented, option

TASKS = ("seg", "cls")
FREEZE = ("none", "encoder", "all")
TRANSFER = ("all", "encoder")
SELECT = ("best", "last")
#: Flip probability per axis when ``augment.flip_prob`` is not given.
DEFAULT_FLIP_PROB = 0.5


@documented
@dataclass
class BackboneConfig:
    """The network trained from scratch (a pretrained checkpoint brings its own)."""

    backbone: str = option("unet", "Registered backbone name (unet).", cli=False)
    channels: tuple[int, ...] = option(DEFAULT_CHANNELS, "U-Net widths when training from scratch, e.g. 8,16,32,16,8.")


@documented
@dataclass
class AugmentConfig:
    """Training augmentation, applied batched in torch on the training device.

    Spatial: random flips, then a small affine (rotation, per-axis scale, shear) about the
    centre, images linear, labels nearest. Intensity: contrast about the mean, brightness
    shift, Gaussian noise.
    """

    enabled: bool = option(True, "Augment at all.", cli=False)
    flip_prob: float | None = option(
        None,
        "Probability of flipping along each axis of flip_axes (default 0.5).",
        cli=False,
        doc="Not given: 0.5, and segmentation runs turn flips off along an axis where the labels look "
        "lateralised (a flip would swap classes such as left and right GM, see :mod:`cover.downstream.flips`).",
    )
    flip_axes: tuple[int, ...] | None = option(
        None, "Spatial axes (array order of the loaded images) that flips act on; null: every axis.", cli=False
    )
    rotation_deg: float = option(10.0, "Rotation angles uniform in ±rotation_deg (per axis in 3D).", cli=False)
    scale_range: tuple[float, float] = option((0.9, 1.1), "Per-axis scale uniform in this range.", cli=False)
    shear_deg: float = option(3.0, "Shear angles uniform in ±shear_deg.", cli=False)
    contrast_range: tuple[float, float] = option(
        (0.8, 1.2), "Contrast factor about the image mean, uniform in this range.", cli=False
    )
    brightness: float = option(0.05, "Additive shift, normal with this standard deviation.", cli=False)
    noise_std: float = option(0.03, "Gaussian noise standard deviation, uniform in [0, noise_std].", cli=False)


@documented
@dataclass
class FinetuneConfig:
    """Everything ``cover finetune`` needs.

    ``None`` fields are resolved by :func:`resolve_finetune_config`.
    """

    task: str = option("seg", "seg (segmentation) or cls (classification).", choices=TASKS)
    pretrained: str | None = option(
        None,
        "cover pretrain run folder, checkpoint or export to start from; omit to train from scratch.",
        flags=("--checkpoint", "--pretrained"),
        doc="A ``.pt`` file, a run folder or its ``checkpoints/`` folder (the newest checkpoint), or an export "
        "folder; ``None``: training from scratch with the same recipe.",
    )
    images: str | None = option(None, "Image folder (or file); omit (with --task seg) for the MNI152 tissue demo.")
    labels: str | None = option(
        None,
        "seg: label-map folder (same stems); cls: CSV with image,label.",
        doc="seg: label maps matched to ``images`` by file name stem (also ``<stem>_seg``, ``_label``, ``_mask``, "
        "``_gt``); cls: ``image`` by file name or stem. cls without ``labels``: one sub-folder of ``images`` "
        "per class.",
    )
    datalist: str | None = option(
        None,
        "JSON/CSV datalist with image and label.",
        doc="A label-map path for seg, a class for cls; replaces ``images``/``labels``.",
    )
    val_images: str | None = option(None, "Explicit validation images (else --val-fraction).")
    val_labels: str | None = option(None, "Labels of --val-images (same rules as --labels).")
    val_datalist: str | None = option(None, "Explicit validation datalist.")
    dim: int = Data.dim(help="2 or 3 (default: the pretrained checkpoint's, else 2).")
    num_classes: int | None = option(
        None, "Classes incl. background (seg) or number of classes (default: from the labels)."
    )
    class_names: tuple[str, ...] | None = option(None, "Optional names, one per class.", cli=False)
    label_values: tuple[int, ...] | None = option(
        None,
        "Values the label maps hold, background first: value i of the list is class i, e.g. 0,255 for "
        "binary masks saved as 0/255; predicted masks are written back in these values "
        "(default: the labels are the class indices 0..K-1).",
    )
    label_fraction: float | None = option(None, "Fraction of the training cases that are labeled.")
    num_labeled: int | None = option(None, "Number of labeled training cases (wins over --label-fraction).")
    val_fraction: float = option(
        0.2,
        "Fraction of the cases held out for validation.",
        doc="Ignored with ``val_images``/``val_datalist``, or when the datalist has its own ``validation`` list.",
    )
    epochs: int | None = option(None, "Passes over the labeled cases (converted to steps).")
    steps: int | None = Loop.steps(default=None, help="Optimiser steps (wins over --epochs).")
    freeze: str = option("none", "none, encoder (train decoder and head), or all (linear probe).", choices=FREEZE)
    transfer: str = option("all", "Pretrained part to start from: all, or encoder (fresh decoder).", choices=TRANSFER)
    freeze_steps: int = option(
        0,
        "First steps training only the new head on a fixed pretrained backbone (LP-FT).",
        doc="The backbone then warms up again over ``warmup_steps``. Ignored without ``pretrained``.",
    )
    backbone_lr_scale: float = option(
        1.0, "Pretrained backbone's lr relative to --lr (the new head's).", doc="Ignored without ``pretrained``."
    )
    batch_size: int | None = Data.batch_size()
    size: tuple[int, ...] | None = Data.size(
        help="Training crop (seg) / input size (cls): 96 or 96,96 (multiple of 16)."
    )
    lr: float = Loop.lr(default=1e-3)
    lr_schedule: str = option(
        "cosine",
        "After warm-up: cosine (decay to 0 at --steps) or constant (--steps only a cap).",
        choices=LR_SCHEDULES,
        doc="With ``constant`` the rates do not depend on ``steps``, so with ``patience`` a run stopped by "
        "patience is the same whatever the cap.",
    )
    weight_decay: float = Loop.weight_decay(default=1e-5)
    warmup_steps: int | None = Loop.warmup_steps()
    grad_clip: float = Loop.grad_clip()
    amp: str = Device.amp(doc="Training steps only; validation and evaluation run in float32.")
    channels_last: bool | None = Device.channels_last()
    cudnn_benchmark: bool | None = Device.cudnn_benchmark()
    tf32: bool | None = Device.tf32()
    compile: bool = Device.compile(doc="The training steps' network (validation and evaluation run it uncompiled).")
    intensity: str | None = Data.intensity(
        help="Intensity preset (default: the pretrained checkpoint's, else per file).",
        doc="Formerly ``preset`` (still read).",
    )
    foreground_prob: float = option(
        0.5, "seg: probability that a training crop is centred on a labeled voxel.", cli=False
    )
    val_every: int | None = option(None, "Steps between validations (default: about 10 per run).")
    patience: int | None = option(None, "Early stop after this many validations without improvement.")
    select: str = option("best", "Reported checkpoint: best (validation Dice/AUC) or last.", choices=SELECT)
    overlap: float = option(0.25, "Sliding-window overlap at validation and evaluation.", cli=False)
    in_channels: int = Data.in_channels()
    seed: int = Loop.seed()
    device: str = Device.device()
    out: str = Loop.out(default="cover_runs/finetune")
    overwrite: bool = Loop.overwrite()
    resume: str | None = Loop.resume(doc="With ``auto``, a fresh start when there is none.")
    checkpoint_every: int | None = Loop.checkpoint_every(doc="Default: at every validation.")
    checkpoint_minutes: float | None = Loop.checkpoint_minutes()
    keep_checkpoints: int = Loop.keep_checkpoints(default=2)
    max_nonfinite_steps: int = Loop.max_nonfinite_steps()
    log_every: int = Loop.log_every()
    evaluate_test: bool = option(
        True, "Demo only: evaluate the selected checkpoint on the test slab at the end.", cli=False
    )
    augment: AugmentConfig = option(default_factory=AugmentConfig, help="Augmentation settings (augment.*).", cli=False)
    model: BackboneConfig = option(default_factory=BackboneConfig, help="Backbone for training from scratch (model.*).")

    @property
    def is_demo(self) -> bool:
        """Whether the built-in MNI152 tissue demo is used (no data given)."""
        return self.images is None and self.datalist is None


#: Settings of the built-in demo (2D MNI152 tissue slices, a few minutes on 2 CPU cores).
DEMO_DEFAULTS: dict[str, Any] = {
    "dim": 2,
    "size": 96,
    "batch_size": 4,
    "steps": 200,
    "val_every": 25,
    "intensity": "mri",
    "select": "last",  # the demo validates on its test slab, so it reports the last checkpoint
    "class_names": ("background", "CSF", "GM", "WM"),
}

#: Defaults with user data, per dimension.
DATA_DEFAULTS: dict[int, dict[str, Any]] = {
    2: {"size": 256, "batch_size": 8},
    3: {"size": 96, "batch_size": 2},
}

#: Training epochs when neither ``steps`` nor ``epochs`` is given.
DEFAULT_EPOCHS = 100


def _values(config: FinetuneConfig | dict[str, Any] | str | Path | None, options: dict[str, Any]) -> dict[str, Any]:
    if isinstance(config, FinetuneConfig):
        values = to_dict(config)
    elif isinstance(config, (str, Path)):
        values = load_yaml(config)
    else:
        values = dict(config or {})
    values.update({k: v for k, v in options.items() if v is not None})
    return {k: v for k, v in values.items() if v is not None}


def dim_of_checkpoint(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``dim`` taken from the ``pretrained`` checkpoint when not given (as ``predict`` does).

    A ``dim`` that is given stays: one that contradicts the checkpoint is refused when the
    checkpoint is loaded, as is a checkpoint that does not exist (left alone here, so that
    ``--dry-run`` can show a config for a checkpoint still to be made).
    """
    if values.get("dim") is not None or values.get("pretrained") is None or not Path(values["pretrained"]).exists():
        return values
    from cover.models.loading import read_checkpoint

    return {**values, "dim": int(read_checkpoint(values["pretrained"]).metadata["spatial_dims"])}


def resolve_finetune_config(
    config: FinetuneConfig | dict[str, Any] | str | Path | None = None, **options: Any
) -> FinetuneConfig:
    """Build and validate a fine-tuning config.

    Args:
        config: A :class:`FinetuneConfig`, a dict of its keys, a YAML path, or ``None``.
        **options: Keys overriding ``config`` (``None`` values are ignored).

    Returns:
        The config with ``size`` (one value per axis) and ``batch_size`` resolved; ``steps``
        stays ``None`` when ``epochs`` decides (see :func:`resolve_steps`).
    """
    values = lift_model_keys(_values(config, options))
    probe = update_dataclass(FinetuneConfig(), {k: values[k] for k in ("dim", "images", "datalist") if k in values})
    base = DEMO_DEFAULTS if probe.is_demo else DATA_DEFAULTS[probe.dim]
    resolved = update_dataclass(update_dataclass(FinetuneConfig(), base), values)
    size = resolved.size
    if len(size) == 1:
        size = size * resolved.dim
    changes: dict[str, Any] = {"size": size}
    if resolved.steps is None and resolved.epochs is None:
        changes["epochs"] = DEFAULT_EPOCHS
    resolved = dataclasses.replace(resolved, **changes)
    validate_finetune_config(resolved)
    return fill_device_defaults(resolved)


def resolve_steps(config: FinetuneConfig, num_train: int) -> FinetuneConfig:
    """Fill ``steps`` (from ``epochs``), ``warmup_steps``, ``val_every`` and ``checkpoint_every``.

    Args:
        config: A resolved config.
        num_train: Number of labeled training cases.

    Returns:
        The completed config.
    """
    steps = config.steps
    if steps is None:
        steps = max(1, config.epochs * math.ceil(num_train / config.batch_size))
    warmup = config.warmup_steps if config.warmup_steps is not None else max(1, steps // 20)
    val_every = config.val_every if config.val_every is not None else max(1, steps // 10)
    every = config.checkpoint_every if config.checkpoint_every is not None else val_every
    return dataclasses.replace(config, steps=steps, warmup_steps=warmup, val_every=val_every, checkpoint_every=every)


def validate_finetune_config(config: FinetuneConfig) -> None:
    """Raise a one-line :class:`ConfigError` for values that types alone do not catch.

    Args:
        config: A resolved config.
    """
    check_choices(config)
    checks = [
        (len(config.size) == config.dim, "size", f"{list(config.size)} needs 1 or {config.dim} values"),
        (all(s > 0 for s in config.size), "size", f"{list(config.size)} must be positive"),
        (config.batch_size >= 1, "batch_size", "must be at least 1"),
        (config.steps is None or config.steps >= 1, "steps", "must be at least 1"),
        (config.epochs is None or config.epochs >= 1, "epochs", "must be at least 1"),
        (config.lr > 0, "lr", f"{config.lr} must be positive"),
        (config.freeze_steps >= 0, "freeze_steps", "must be at least 0"),
        (config.backbone_lr_scale > 0, "backbone_lr_scale", f"{config.backbone_lr_scale} must be positive"),
        (
            config.label_fraction is None or 0 < config.label_fraction <= 1,
            "label_fraction",
            f"{config.label_fraction} must lie in (0, 1]",
        ),
        (config.num_labeled is None or config.num_labeled >= 1, "num_labeled", "must be at least 1"),
        (0 <= config.val_fraction < 1, "val_fraction", f"{config.val_fraction} must lie in [0, 1)"),
        (config.num_classes is None or config.num_classes >= 2, "num_classes", "must be at least 2"),
        (0 <= config.foreground_prob <= 1, "foreground_prob", "must lie in [0, 1]"),
        (0 <= config.overlap < 1, "overlap", f"{config.overlap} must lie in [0, 1)"),
        (config.patience is None or config.patience >= 1, "patience", "must be at least 1"),
        (config.val_every is None or config.val_every >= 1, "val_every", "must be at least 1"),
        (config.in_channels >= 1, "in_channels", "must be at least 1"),
        (config.checkpoint_every is None or config.checkpoint_every >= 1, "checkpoint_every", "must be at least 1"),
        (config.checkpoint_minutes is None or config.checkpoint_minutes > 0, "checkpoint_minutes", "must be positive"),
        (config.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1"),
        (config.max_nonfinite_steps >= 1, "max_nonfinite_steps", "must be at least 1"),
        (config.log_every >= 1, "log_every", "must be at least 1"),
        (
            config.augment.flip_prob is None or 0 <= config.augment.flip_prob <= 1,
            "augment.flip_prob",
            f"{config.augment.flip_prob} must lie in [0, 1]",
        ),
        (
            all(0 <= a < config.dim for a in config.augment.flip_axes or ()),
            "augment.flip_axes",
            f"{list(config.augment.flip_axes or ())} must be axes 0..{config.dim - 1}",
        ),
        (
            config.class_names is None or config.num_classes is None or len(config.class_names) == config.num_classes,
            "class_names",
            f"has {len(config.class_names or ())} names but num_classes is {config.num_classes}",
        ),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{key}: {message}")
    _check_label_values(config)
    if config.is_demo and config.task != "seg":
        raise ConfigError("task: the built-in demo is a segmentation task; give --images/--labels or --datalist")
    if config.is_demo and config.dim != 2:
        raise ConfigError("dim: the built-in demo is 2D (MNI152 axial slices); give --images/--labels for 3D")
    if config.images is not None and config.datalist is not None:
        raise ConfigError("images: give either images (+ labels) or a datalist, not both")
    if config.task == "seg" and config.images is not None and config.labels is None:
        from cover.data.folders import dataset_json_of

        if dataset_json_of(config.images) is None:  # an nnU-Net raw / MSD dataset folder has its labels
            raise ConfigError("labels: segmentation needs a labels folder matching images (or a datalist)")
    if config.val_images is not None and config.val_labels is None and config.task == "seg":
        raise ConfigError("val_labels: segmentation validation images need a labels folder")


def _check_label_values(config: FinetuneConfig) -> None:
    """``label_values``: valid, for segmentation, and one per class where the classes are given."""
    from cover.data.labels import check_label_values

    values = check_label_values(config.label_values)
    if values is None:
        return
    if config.task != "seg":
        raise ConfigError("label_values: maps label-map values to classes; it applies to --task seg only")
    for key, count in (("num_classes", config.num_classes), ("class_names", len(config.class_names or ()) or None)):
        if count is not None and count != len(values):
            raise ConfigError(f"label_values: {len(values)} values (one per class) but {key} gives {count} classes")
