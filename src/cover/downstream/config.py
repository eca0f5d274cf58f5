"""Typed configuration of ``cover finetune``: fields, defaults, validation with one-line messages.

The same names work in a YAML file (``--config``), on the command line and in
:func:`cover.finetune`. Defaults depend on whether data is given: without ``images`` and
``datalist`` the built-in MNI152 tissue demo is used (:mod:`cover.data.demo.tissue`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cover.config import DEFAULT_CHANNELS, lift_model_keys, load_yaml, to_dict, update_dataclass
from cover.devices import AMP_CHOICES, fill_device_defaults
from cover.engine.schedule import LR_SCHEDULES
from cover.errors import ConfigError

TASKS = ("seg", "cls")
FREEZE = ("none", "encoder", "all")
TRANSFER = ("all", "encoder")
SELECT = ("best", "last")
#: Flip probability per axis when ``augment.flip_prob`` is not given.
DEFAULT_FLIP_PROB = 0.5


@dataclass
class BackboneConfig:
    """The network trained from scratch (a pretrained checkpoint brings its own).

    Attributes:
        backbone: Registered backbone name (``unet``).
        channels: U-Net encoder then decoder widths.
    """

    backbone: str = "unet"
    channels: tuple[int, ...] = DEFAULT_CHANNELS


@dataclass
class AugmentConfig:
    """Training augmentation, applied batched in torch on the training device.

    Spatial: random flips, then a small affine (rotation, per-axis scale, shear) about the
    centre, images linear, labels nearest. Intensity: contrast about the mean, brightness
    shift, Gaussian noise.

    Attributes:
        enabled: Augment at all.
        flip_prob: Probability of flipping along each axis of ``flip_axes``; ``None`` (not
            given): 0.5, and segmentation runs turn flips off along an axis where the labels
            look lateralised (a flip would swap classes such as left and right GM, see
            :mod:`cover.downstream.flips`).
        flip_axes: Spatial axes (array order of the loaded images) that flips act on;
            ``None``: every axis.
        rotation_deg: Rotation angles uniform in ``±rotation_deg`` (per axis in 3D).
        scale_range: Per-axis scale uniform in this range.
        shear_deg: Shear angles uniform in ``±shear_deg``.
        contrast_range: Contrast factor about the image mean, uniform in this range.
        brightness: Additive shift, normal with this standard deviation.
        noise_std: Gaussian noise standard deviation, uniform in ``[0, noise_std]``.
    """

    enabled: bool = True
    flip_prob: float | None = None
    flip_axes: tuple[int, ...] | None = None
    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    shear_deg: float = 3.0
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.05
    noise_std: float = 0.03


@dataclass
class FinetuneConfig:
    """Everything ``cover finetune`` needs.

    ``None`` fields are resolved by :func:`resolve_finetune_config`.

    Attributes:
        task: ``seg`` (segmentation) or ``cls`` (classification).
        pretrained: Checkpoint of ``cover pretrain`` (a ``.pt`` file, a run folder or its
            ``checkpoints/`` folder: the newest checkpoint), an export folder, or ``None`` for
            training from scratch with the same recipe.
        images: Folder (or single file) of images.
        labels: seg: folder of label maps matched to ``images`` by file name stem (also
            ``<stem>_seg``, ``_label``, ``_mask``, ``_gt``); cls: a CSV with ``image`` and
            ``label`` columns (image by file name or stem). cls without ``labels``: one
            sub-folder of ``images`` per class.
        datalist: JSON/CSV datalist with ``image`` and ``label`` (a label-map path for seg, a
            class for cls); replaces ``images``/``labels``.
        val_images: Optional explicit validation images (else ``val_fraction`` of the cases).
        val_labels: Their labels (same rules as ``labels``).
        val_datalist: Optional explicit validation datalist.
        dim: 2 or 3.
        num_classes: Classes including background (seg) or number of classes (cls); ``None``
            infers it from the labels.
        class_names: Optional names, one per class.
        label_values: seg: the values the label maps hold, background first; value ``i`` of
            the list is class ``i`` (``(0, 255)`` for binary masks saved as 0/255), and
            predicted masks are written back in these values. ``None``: the label maps must
            hold the class indices ``0..K-1``.
        label_fraction: Fraction of the training pool used as labeled cases.
        num_labeled: Number of labeled cases (overrides ``label_fraction``).
        val_fraction: Fraction of all cases held out for validation (ignored with
            ``val_images``/``val_datalist``, or when the datalist has its own ``validation`` list).
        epochs: Passes over the labeled cases (converted to steps); ignored with ``steps``.
        steps: Optimiser steps.
        freeze: ``none``, ``encoder`` (train decoder and head) or ``all`` (linear probe: only
            the new head trains on frozen features).
        transfer: What a pretrained checkpoint gives: ``all`` (encoder and decoder) or
            ``encoder`` (the decoder starts from the run's fresh initialisation).
        freeze_steps: Steps at the start during which a pretrained backbone stays fixed and
            only the new head trains (linear probe, then fine-tuning: LP-FT); the backbone then
            warms up again over ``warmup_steps``. Ignored without ``pretrained``.
        backbone_lr_scale: Learning rate of a pretrained backbone relative to ``lr`` (the
            new head's). Ignored without ``pretrained``.
        batch_size: Batch size.
        size: Training crop (seg) or input size (cls) per axis; a multiple of the backbone's
            divisor.
        lr: Adam learning rate (linear warm-up, then ``lr_schedule``).
        lr_schedule: After the warm-up, ``cosine`` (decay to 0 at ``steps``) or ``constant``
            (the rates do not depend on ``steps``, so with ``patience`` the step count is only a
            safety cap: a run stopped by patience is the same whatever the cap).
        weight_decay: Adam weight decay.
        warmup_steps: Warm-up steps (``None``: 5 % of ``steps``).
        grad_clip: Gradient norm clipping (0 disables).
        amp: Mixed precision of the training steps: ``auto`` (per device,
            :mod:`cover.devices`), ``none``, ``bf16`` or ``fp16`` (with loss scaling);
            validation and evaluation run in float32.
        channels_last: Train in the channels-last memory layout (1.1-1.25x faster pretraining
            iterations on the project's AVX-512 CPU, ``benchmarks/RESULTS.md``); ``None``: per
            device.
        cudnn_benchmark: Let cuDNN time its convolution algorithms (CUDA); ``None``: per device.
        tf32: TF32 matrix products and convolutions (CUDA); ``None``: per device.
        compile: Compile the training steps' network with ``torch.compile`` (validation and
            evaluation run it uncompiled).
        intensity: Intensity preset; ``None`` uses the pretrained checkpoint's preset, else each
            file's default (from its modality). Formerly ``preset`` (still read).
        foreground_prob: seg: probability that a training crop is centred on a labeled voxel.
        val_every: Steps between validations (``None``: about 10 per run).
        patience: Stop after this many validations without improvement (``None``: never).
        select: Checkpoint reported as the result: ``best`` (validation Dice/AUC) or ``last``.
        overlap: Sliding-window overlap at validation and evaluation.
        in_channels: Image channels.
        seed: Seed of the case split, the sampling, the augmentation and the new weights.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        out: Output folder.
        overwrite: Allow writing into a non-empty folder of another run.
        resume: ``None``, ``auto`` (newest valid checkpoint in ``out``; a fresh start when
            there is none) or a checkpoint path.
        checkpoint_every: Steps between training-state checkpoints in ``out/checkpoints``
            (``None``: at every validation).
        checkpoint_minutes: Also checkpoint when this many minutes passed since the last one.
        keep_checkpoints: Number of recent training-state checkpoints kept.
        max_nonfinite_steps: Abort after this many consecutive steps with a non-finite loss
            or gradient (each such step is skipped).
        log_every: Steps between log rows.
        evaluate_test: Demo only: evaluate the selected checkpoint on the test slab at the end.
        augment: Augmentation settings.
        model: Backbone for training from scratch.
    """

    task: str = "seg"
    pretrained: str | None = None
    images: str | None = None
    labels: str | None = None
    datalist: str | None = None
    val_images: str | None = None
    val_labels: str | None = None
    val_datalist: str | None = None
    dim: int = 2
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    label_values: tuple[int, ...] | None = None
    label_fraction: float | None = None
    num_labeled: int | None = None
    val_fraction: float = 0.2
    epochs: int | None = None
    steps: int | None = None
    freeze: str = "none"
    transfer: str = "all"
    freeze_steps: int = 0
    backbone_lr_scale: float = 1.0
    batch_size: int | None = None
    size: tuple[int, ...] | None = None
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-5
    warmup_steps: int | None = None
    grad_clip: float = 1.0
    amp: str = "auto"
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    tf32: bool | None = None
    compile: bool = False
    intensity: str | None = None
    foreground_prob: float = 0.5
    val_every: int | None = None
    patience: int | None = None
    select: str = "best"
    overlap: float = 0.25
    in_channels: int = 1
    seed: int = 0
    device: str = "auto"
    out: str = "cover_runs/finetune"
    overwrite: bool = False
    resume: str | None = None
    checkpoint_every: int | None = None
    checkpoint_minutes: float | None = None
    keep_checkpoints: int = 2
    max_nonfinite_steps: int = 20
    log_every: int = 10
    evaluate_test: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)

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
    checks = [
        (config.task in TASKS, "task", f"{config.task!r} is not allowed (allowed: {', '.join(TASKS)})"),
        (config.freeze in FREEZE, "freeze", f"{config.freeze!r} is not allowed (allowed: {', '.join(FREEZE)})"),
        (
            config.transfer in TRANSFER,
            "transfer",
            f"{config.transfer!r} is not allowed (allowed: {', '.join(TRANSFER)})",
        ),
        (config.amp in AMP_CHOICES, "amp", f"{config.amp!r} is not allowed (allowed: {', '.join(AMP_CHOICES)})"),
        (
            config.lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            f"{config.lr_schedule!r} is not allowed (allowed: {', '.join(LR_SCHEDULES)})",
        ),
        (config.select in SELECT, "select", f"{config.select!r} is not allowed (allowed: {', '.join(SELECT)})"),
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
