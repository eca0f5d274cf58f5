"""Typed configuration: dataclasses, YAML in and out, validation with one-line messages.

Every command's options are fields of a dataclass here; the same names are accepted in a
YAML file (``--config FILE.yaml``), on the command line and by the Python API. The resolved
configuration is written next to every output as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cover.devices import AMP_CHOICES
from cover.errors import ConfigError
from cover.options import Option, documented, option, option_of
from cover.views import ViewConfig

log = logging.getLogger(__name__)

DEFAULT_CHANNELS = (32, 64, 128, 256, 512, 256, 128, 64, 32)

#: Config keys renamed since earlier versions: old name -> new name. The old name is still read:
#: from the user (YAML, Python API) with a one-line notice, from a run's saved ``config.yaml`` or a
#: checkpoint's config (written by an older version) silently.
RENAMED_KEYS: dict[str, str] = {"preset": "intensity"}

#: The default pretraining learning rate (Adam) as text, see :func:`default_lr`.
LR_RULE = "1e-3 x sqrt(batch/4)"


class Loop:
    """Options of the training loop and its optimiser, shared by ``cover pretrain`` and ``cover finetune``.

    Each attribute is an :class:`cover.options.Option`; a config declares its field with it
    (``seed: int = Loop.seed()``), with its own default where the commands differ.
    """

    steps = Option("Optimiser steps.")
    lr = Option("Learning rate (Adam).")
    weight_decay = Option("Adam weight decay.")
    warmup_steps = Option("Linear warm-up steps before the decay; null: 5 % of the steps.", default=None, cli=False)
    grad_clip = Option("Gradient norm clipping (0 disables).", default=1.0, cli=False)
    seed = Option("Seed of every random choice (data order, augmentation, initialisation).", default=0)
    log_every = Option("Steps between log lines (CSV, TensorBoard).", default=10, cli=False)
    checkpoint_every = Option("Steps between training-state checkpoints.", default=None)
    checkpoint_minutes = Option("Also checkpoint when this many minutes passed since the last one.", default=None)
    keep_checkpoints = Option("Number of recent training-state checkpoints kept.", cli=False)
    max_nonfinite_steps = Option(
        "Abort after this many consecutive steps with a non-finite loss or gradient (each is skipped).",
        default=20,
        cli=False,
    )
    resume = Option("auto (newest valid checkpoint in --out) or a checkpoint.", default=None)
    overwrite = Option("Write into a non-empty --out (of another run).", default=False)
    out = Option("Output folder.")


class Device:
    """Options of the device and the compute settings, shared by ``cover pretrain`` and ``cover finetune``.

    ``None`` (``auto`` for ``amp``) is filled per device by :func:`cover.devices.fill_device_defaults`.
    """

    device = Option("auto, cpu, cuda or cuda:N.", default="auto")
    amp = Option("Mixed precision: auto (per device), none, bf16 or fp16.", default="auto", choices=AMP_CHOICES)
    compile = Option("Use torch.compile.", default=False)
    channels_last = Option(
        "Channels-last memory layout (often faster); default per device.",
        default=None,
        doc="1.1-1.25x faster pretraining iterations on the project's AVX-512 CPU (``benchmarks/RESULTS.md``).",
    )
    cudnn_benchmark = Option("cuDNN autotuning (CUDA); default per device (on with CUDA).", default=None)
    tf32 = Option("TF32 matrix products and convolutions (CUDA); default per device (on with CUDA).", default=None)


class Data:
    """Options of the images read, shared by ``cover pretrain`` and ``cover finetune``."""

    dim = Option("2 or 3.", default=2, choices=(2, 3))
    size = Option("Crop/patch size: 64 or 64,64, one value per axis or one for all (multiples of 16).", default=None)
    batch_size = Option("Batch size.", default=None)
    intensity = Option(
        "Intensity preset: ct, ct:-175,250, mri, xray, zscore, ... (default: per file).",
        default=None,
        doc="Chosen from each file's modality when not given (formerly ``preset``, still read).",
    )
    in_channels = Option("Image channels; >1 reads colour/vector samples as channels (never mixed).", default=1)


@documented
@dataclass
class ModelConfig:
    """Backbone and vector head."""

    backbone: str = option("unet", "Backbone (unet, monai-basicunet, nnunet).")
    channels: tuple[int, ...] = option(
        DEFAULT_CHANNELS, "U-Net widths, encoder then decoder, e.g. 16,32,64,128,64,32,16."
    )
    heads: tuple[int, ...] = option((4, 4, 4, 1, 1), "MoV heads per level, coarse to fine, e.g. 4,4,4,1,1.")
    head_dim: int = option(8, "Channels per MoV head (d).")
    window_radius: int = option(2, "MoV window radius r (window 2r+1 per axis).")
    backbone_args: dict[str, Any] = option(
        default_factory=dict,
        help="Extra arguments of the backbone beyond its channels (--plans, --configuration for nnunet).",
        cli=False,
        doc="For ``unet``: ``init``, ``cover`` or ``authors`` (:class:`cover.nn.unet.UNet`); for "
        "``monai-basicunet``: ``out_channels``, ``norm``, ``act``, ``bias``, ``dropout``, ``upsample`` of "
        "``monai.networks.nets.BasicUNet``; for ``nnunet``: ``plans``, ``configuration``, ``num_classes`` "
        "(:mod:`cover.nn.nnunet_backbone`).",
    )
    mov_schedule: str = option(
        "auto",
        "MoV schedule: auto (fused on CUDA, chunked on CPU), fused or chunked (same result).",
        choices=("auto", "fused", "chunked"),
        doc="``fused``: few large operations (GPUs, ``torch.compile``); ``chunked``: cache-sized chunks; "
        "``auto``: ``fused`` on CUDA, the faster one on a CPU (:func:`cover.nn.mov.resolve_schedule`).",
    )


@documented
@dataclass
class PretrainConfig:
    """Everything ``cover pretrain`` needs.

    ``None`` fields are resolved by :func:`resolve_pretrain_config` from the dimension and
    from whether the built-in demo data is used.
    """

    method: str = option("cover", "Pretraining method (cover, ...).")
    data: str | None = option(None, "Folder or datalist of unlabeled images; omit for the built-in MNI152 demo.")
    dim: int = Data.dim()
    size: tuple[int, ...] | None = Data.size()
    batch_size: int | None = Data.batch_size(help="Global batch size.")
    steps: int | None = Loop.steps(default=None)
    lr: float | None = Loop.lr(
        default=None,
        help=f"Learning rate (default {LR_RULE}).",
        doc="Square-root scaling from the rate measured to learn at batch 4 (:func:`default_lr`).",
    )
    weight_decay: float = Loop.weight_decay(default=1e-4)
    warmup_steps: int | None = Loop.warmup_steps()
    grad_clip: float = Loop.grad_clip()
    amp: str = Device.amp()
    device: str = Device.device()
    out: str | None = Loop.out(
        default=None, doc="Default ``cover_runs/pretrain`` in 2D and ``cover_runs/pretrain-3d`` in 3D."
    )
    seed: int = Loop.seed()
    checkpoint_every: int | None = Loop.checkpoint_every()
    checkpoint_minutes: float | None = Loop.checkpoint_minutes()
    keep_checkpoints: int = Loop.keep_checkpoints(default=3)
    max_nonfinite_steps: int = Loop.max_nonfinite_steps()
    compile: bool = Device.compile()
    channels_last: bool | None = Device.channels_last()
    cudnn_benchmark: bool | None = Device.cudnn_benchmark()
    tf32: bool | None = Device.tf32()
    log_every: int = Loop.log_every()
    num_workers: int | None = option(None, "DataLoader workers (default per device).")
    eval_pairs: int = option(8, "Held-out view pairs for the final endpoint error and the flow figure.", cli=False)
    intensity: str | None = Data.intensity()
    spacing: tuple[float, ...] | None = option(None, "Resample volumes to this spacing in mm, e.g. 1.5,1.5,2.")
    slice_axis: int = option(2, "Axis along which 2D slices are taken from 3D volumes.", cli=False)
    in_channels: int = Data.in_channels()
    cache_dir: str | None = option(
        "auto",
        "Decoded-image cache shared by runs: auto (~/.cache/cover/arrays), a folder, or none.",
        doc="``auto``: ``$COVER_CACHE_DIR``, else the user's cache folder; ``None``/``none``: memory only, "
        "decoded at every start (:mod:`cover.data.store`).",
    )
    cache_memory_mb: float = option(
        4096,
        "Most MB of image arrays held per process (default 4096).",
        doc="Per DataLoader worker too; arrays past it are read again from the cache (or decoded again) when drawn.",
    )
    on_bad_file: str = option("skip", "skip (warn) or error.", choices=("skip", "error"))
    resume: str | None = Loop.resume()
    overwrite: bool = Loop.overwrite()
    vec_weight: float = option(1.0, "Weight of the COVER vector (registration) loss.")
    con_weight: float = option(1.0, "Weight of the COVER consistency loss.")
    method_options: dict[str, Any] = option(
        default_factory=dict,
        help="Extra options of the method (baselines' temperature, COVER's recipe: --recipe, ...).",
        cli=False,
        doc="For ``cover`` the resolved config always names its ``recipe``.",
    )
    views: ViewConfig = option(default_factory=ViewConfig, help="View generator settings (views.*).", cli=False)
    model: ModelConfig = option(default_factory=ModelConfig, help="Backbone and head settings (model.*).")

    @property
    def is_demo(self) -> bool:
        """Whether the built-in demo data is used."""
        return self.data is None


# Settings that differ from the paper's for the built-in demo (2 CPU cores, minutes).
DEMO_OVERRIDES: dict[int, dict[str, Any]] = {
    2: {
        "size": 64,
        "batch_size": 4,
        "steps": 300,
        "lr": 1e-3,
        "warmup_steps": 20,
        "views": {
            "rotation_deg": 10.0,
            "num_rotations": 1,
            "scale_range": (0.85, 1.15),
            "translation": 0.08,
            "shear_deg": 4.0,
        },
    },
    # 3D: the reference 3D view ranges, a half-width U-Net with three down-samplings and a
    # 3x3x3 MoV window; the paper's 4-down-sampling U-Net needs larger patches (96^3) than 2 CPU
    # cores train in minutes (measurements: docs/method.md §11 D3). 24^3 patches: a step costs
    # about half of a 32^3 one, and 1000 of them reach the held-out ratio 800 steps at 32^3 did (README).
    # Channels-last: 239-259 s instead of about 280-320 s on the 2-core machine (32^3, README).
    3: {
        "channels_last": True,
        "size": 24,
        "batch_size": 1,
        "steps": 1000,
        "lr": 1e-3,
        "warmup_steps": 50,
        "model": {"channels": (16, 32, 64, 128, 64, 32, 16), "heads": (4, 4, 1, 1), "window_radius": 1},
    },
}

# Paper-scale defaults when the user brings data.
DATA_DEFAULTS: dict[int, dict[str, Any]] = {
    2: {"size": 384, "batch_size": 24, "steps": 200_000},
    3: {"size": 96, "batch_size": 4, "steps": 100_000},
}


def default_lr(batch_size: int) -> float:
    """Default pretraining learning rate: ``1e-3 * sqrt(batch_size / 4)``.

    1e-3 at batch 4 is the rate the demo and the benchmark presets learn with (vector loss
    falls, held-out EPE drops below the zero field's); square-root scaling (the usual rule
    for Adam) carries it to other batches. The paper's ``1e-4 * batch / 256`` gives 1.6e-6
    at batch 4 and learns almost nothing (README, "First runs on your own data", measured).

    Args:
        batch_size: Global batch size.

    Returns:
        The learning rate.
    """
    return 1e-3 * math.sqrt(batch_size / 4)


#: The paper's pretraining learning rate (recipe ``paper``), see :func:`paper_lr`.
PAPER_LR_RULE = "1e-4 x batch/256"


def paper_lr(batch_size: int) -> float:
    """The paper's (and the release's) learning rate, ``1e-4 * batch_size / 256``: 9.4e-6 at batch 24.

    Args:
        batch_size: Global batch size.

    Returns:
        The learning rate.
    """
    return 1e-4 * batch_size / 256


def lr_notes(lr: float, batch_size: int, recipe: str | None = None) -> tuple[str, str | None]:
    """Where a pretraining learning rate comes from, and a warning when it is far too small.

    Args:
        lr: The learning rate in use.
        batch_size: Global batch size.
        recipe: The run's COVER recipe (its ``lr_rule`` names the rule), if any.

    Returns:
        ``(origin, warning)``: ``origin`` names the rule for the default rate (else
        ``"configured"``: a preset or user value); ``warning`` is one line when ``lr`` is 10x or more below the default.
    """
    reference = default_lr(batch_size)
    if math.isclose(lr, reference, rel_tol=1e-9):
        return f"default {LR_RULE}", None
    if _lr_rule(recipe) == "paper" and math.isclose(lr, paper_lr(batch_size), rel_tol=1e-9):
        return f"recipe {recipe}: {PAPER_LR_RULE}", _too_small(lr, batch_size)
    return "configured", _too_small(lr, batch_size)


def _too_small(lr: float, batch_size: int) -> str | None:
    reference = default_lr(batch_size)
    if lr * 10 <= reference:
        return (
            f"warning: lr {lr:.3g} is {reference / lr:.0f}x below {reference:.3g} ({LR_RULE} at batch {batch_size}), "
            "the rate pretraining has been measured to learn with; it may learn nothing"
        )
    return None


def _recipe_schedule(recipe: str | None) -> dict[str, Any]:
    """A COVER recipe's settings beyond the loss (:data:`cover.methods.cover.RECIPE_SCHEDULES`)."""
    from cover.methods.cover import RECIPE_SCHEDULES

    return RECIPE_SCHEDULES.get(recipe or "", {})


def _given_recipe(values: dict[str, Any]) -> str | None:
    """The COVER recipe a run will use (the named one, else the default); ``None`` for other methods."""
    if values.get("method", "cover") != "cover":
        return None
    from cover.methods.cover import DEFAULT_RECIPE

    options = values.get("method_options") or {}
    return (options.get("recipe") if isinstance(options, dict) else None) or DEFAULT_RECIPE


def _lr_rule(recipe: str | None) -> str:
    return _recipe_schedule(recipe).get("lr_rule", "default")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is tuple:
        item = args[0]
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise ConfigError(f"{key}: expected 2 values, got {list(value)!r}")
        return tuple(_coerce(v, item, key) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return update_dataclass(annotation(), value, prefix=f"{key}.")
    raise ConfigError(f"{key}: unsupported type {_type_name(annotation)}")


def renamed_keys(instance: Any, values: dict[str, Any], prefix: str = "", notice: bool = True) -> dict[str, Any]:
    """``values`` with the old names of :data:`RENAMED_KEYS` replaced by the names ``instance`` uses.

    A key is renamed only where ``instance`` (a config dataclass) has the new field and not the
    old one (``cover benchmark``'s own ``preset`` is its preset, not the intensity preset).

    Args:
        instance: The config dataclass the values are for.
        values: Config keys to values.
        prefix: Key prefix used in messages (``"pretrain."``).
        notice: Log a one-line deprecation notice per old name used.

    Returns:
        The values under their current names.

    Raises:
        ConfigError: An old and a new name given with different values.
    """
    names = {f.name for f in dataclasses.fields(instance)}
    out = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old not in out or old in names or new not in names:
            continue
        value = out.pop(old)
        if out.get(new) is not None and value is not None and out[new] != value:
            raise ConfigError(
                f"{prefix}{new}: given as {out[new]!r} and under its old name {prefix}{old} as {value!r}; "
                f"give {prefix}{new} only"
            )
        if notice:
            log.warning("%s%s is deprecated (the intensity preset): use %s%s", prefix, old, prefix, new)
        out[new] = value if out.get(new) is None else out[new]
    return out


def intensity_argument(intensity: str | None, preset: str | None) -> str | None:
    """A Python function's ``intensity`` argument, or its old name ``preset`` (with a one-line notice).

    Raises:
        ConfigError: Both given with different values.
    """
    values = renamed_keys(PretrainConfig(), {"intensity": intensity, "preset": preset}) if preset is not None else {}
    return values.get("intensity", intensity)


def unknown_key_error(key: str, names: list[str], prefix: str = "") -> ConfigError:
    """One line for an unknown config key, naming its section and the nearest allowed key.

    Args:
        key: The unknown key.
        names: The section's allowed keys.
        prefix: The section (``"pretrain_3d."``, ``""`` at the top level).

    Returns:
        ``pretrain_3d.batchsize: unknown key, did you mean pretrain_3d.batch_size?``, or the
        allowed keys when none is near.
    """
    close = difflib.get_close_matches(str(key), names, n=1)
    if close:
        return ConfigError(f"{prefix}{key}: unknown key, did you mean {prefix}{close[0]}?")
    return ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(names)})")


def update_dataclass(instance: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of a config dataclass with ``values`` applied, checking keys and types.

    Nested dataclass fields are updated key by key, so a YAML ``views: {rotation_deg: 5}``
    keeps the other view settings. Old key names (:data:`RENAMED_KEYS`) are read with a notice.

    Args:
        instance: A config dataclass instance.
        values: New values by field name.
        prefix: Key prefix used in messages (``"views."``).

    Returns:
        The updated copy.
    """
    hints = typing.get_type_hints(type(instance))
    fields = {f.name: f for f in dataclasses.fields(instance)}
    names = list(fields)
    changes = {}
    for key, value in renamed_keys(instance, values, prefix).items():
        if key not in hints:
            raise unknown_key_error(key, names, prefix)
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = update_dataclass(current, value, prefix=f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
        _check_choice(fields[key], changes[key], prefix)
    return dataclasses.replace(instance, **changes)


def _check_choice(field: dataclasses.Field, value: Any, prefix: str = "") -> None:
    """Raise a one-line :class:`ConfigError` when ``value`` is not among the field's allowed values."""
    spec = option_of(field)
    choices = spec.choices if spec is not None else None
    if choices and value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise ConfigError(f"{prefix}{field.name}: {value!r} is not allowed (allowed: {allowed})")


def check_choices(config: Any, prefix: str = "") -> None:
    """Check every field of a config dataclass (nested sections included) against its allowed values.

    Args:
        config: A config dataclass instance.
        prefix: Its section in messages (``"model."``).

    Raises:
        ConfigError: One line naming the first field whose value is not allowed.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{field.name}.")
        else:
            _check_choice(field, value, prefix)


def default_pretrain_out(dim: int) -> str:
    """Output folder of ``cover pretrain`` when ``out`` is not given (one per dimension)."""
    return "cover_runs/pretrain" if int(dim) == 2 else f"cover_runs/pretrain-{int(dim)}d"


def run_values(config: Any, options: dict[str, Any], default_out: str | Callable[[dict], str]) -> dict[str, Any]:
    """A run's config values: a dataclass, dict or YAML path, overridden by ``options``.

    On resume (``resume`` set), the run's own ``OUT/config.yaml`` fills every key that is not
    given, so ``--out DIR --resume auto`` alone continues a run with its settings.

    Args:
        config: A config dataclass, a dict of its keys, a YAML path, or ``None``.
        options: Keys that override ``config`` (``None`` values are ignored).
        default_out: The command's default output folder, or a function of the merged
            values that gives it.

    Returns:
        Plain values, ready for the command's ``resolve_*_config``.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = to_dict(config)
    elif isinstance(config, (str, Path)):
        values = load_yaml(config)
    else:
        values = dict(config or {})
    given = lift_model_keys({k: v for k, v in options.items() if v is not None})
    values = deep_merge(lift_model_keys(values), given)
    if values.get("resume"):
        fallback = default_out(values) if callable(default_out) else default_out
        saved = Path(values.get("out") or fallback) / "config.yaml"
        if saved.is_file():
            merged = {RENAMED_KEYS.get(k, k): v for k, v in load_yaml(saved).items()}  # a file of an older version
            for key in ("resume", "overwrite"):
                merged.pop(key, None)
            if merged.get("method") == "cover" and "recipe" not in (merged.get("method_options") or {}):
                # Saved before loss recipes existed: such runs trained the paper's objective, so a
                # resume keeps it instead of switching to today's default (docs/method.md §10).
                merged["method_options"] = {**(merged.get("method_options") or {}), "recipe": "paper"}
            values = deep_merge(merged, values)
    return values


#: Options of the network that the command line and the YAML top level name without ``model.``
#: (``--window-radius`` / ``window_radius: 1`` = ``model: {window_radius: 1}``).
MODEL_KEYS = tuple(field.name for field in dataclasses.fields(ModelConfig))


def lift_model_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Move top-level network options (:data:`MODEL_KEYS`) under ``model``.

    Raises:
        ConfigError: An option given both at the top level and under ``model`` with other values.
    """
    flat = {key: values[key] for key in MODEL_KEYS if key in values}
    if not flat:
        return values
    model = values.get("model") or {}
    if not isinstance(model, dict):
        return values  # update_dataclass reports "model: expected a mapping"
    for key, value in flat.items():
        if key in model and model[key] != value:
            raise ConfigError(f"{key}: given as {value!r} and as model.{key} {model[key]!r}; give it once")
    out = {k: v for k, v in values.items() if k not in flat}
    out["model"] = {**model, **flat}
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``, recursing into nested mappings (``None`` = not given)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-friendly dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors.

    Args:
        path: The YAML file.

    Returns:
        Its top-level mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    return data


def save_yaml(config: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML.

    Args:
        config: Config dataclass.
        path: Destination file.
    """
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _as_size(size: tuple[int, ...], dim: int) -> tuple[int, ...]:
    if len(size) == 1:
        return size * dim
    if len(size) != dim:
        raise ConfigError(f"size: {list(size)} has {len(size)} values, expected 1 or {dim}")
    return size


def resolve_pretrain_config(values: dict[str, Any]) -> PretrainConfig:
    """Build and validate a pretraining config from user values (YAML merged with options).

    Defaults depend on ``dim`` and on whether ``data`` is given: the built-in demo uses
    :data:`DEMO_OVERRIDES`, user data the paper-scale :data:`DATA_DEFAULTS`; view ranges start
    from :meth:`ViewConfig.reference`. Values the user gave always win; a user who names the
    backbone, its channels or the heads gets the paper's network, not the 3D demo's smaller one,
    and a default size is rounded up to a multiple of that network's size divisor.

    Args:
        values: Config keys to values (``None`` values are ignored).

    Returns:
        The resolved, validated :class:`PretrainConfig`.
    """
    values = lift_model_keys({k: v for k, v in values.items() if v is not None})
    if isinstance(values.get("views"), str):  # ``views: authors`` names the style, ranges stay the defaults
        values["views"] = {"style": values["views"]}
    probe = update_dataclass(PretrainConfig(), {k: values[k] for k in ("dim", "data") if k in values})
    dim = probe.dim
    base = dict(DEMO_OVERRIDES[dim] if probe.is_demo else DATA_DEFAULTS[dim])
    recipe = _given_recipe(values)
    if not probe.is_demo:
        base.update(_recipe_schedule(recipe).get(dim, {}))  # e.g. recipe paper: the release's run length
    given_model = values.get("model")
    if isinstance(given_model, dict) and any(key in given_model for key in ("backbone", "channels", "heads")):
        base.pop("model", None)  # the user's network, from the paper's defaults, not the demo's
    config = PretrainConfig(dim=dim, views=ViewConfig.reference(dim))
    config = update_dataclass(config, base)
    config = update_dataclass(config, values)
    if config.model.backbone == "nnunet":
        config = _resolve_nnunet(config, given_model if isinstance(given_model, dict) else {}, "size" in values)
    elif {"plans", "configuration"} & set(config.model.backbone_args):
        raise ConfigError("--plans/--configuration (model.backbone_args) need --backbone nnunet")
    changes: dict[str, Any] = {"size": _as_size(config.size, dim)}
    if "size" not in values:
        # A default patch fits the network in use (the 3D demo's 24^3 becomes 32^3 for the paper's U-Net).
        divisors = pyramid_shape(config.model, dim)[1]
        changes["size"] = tuple(-(-s // d) * d for s, d in zip(changes["size"], divisors, strict=True))
    if config.lr is None:
        changes["lr"] = paper_lr(config.batch_size) if _lr_rule(recipe) == "paper" else default_lr(config.batch_size)
    init = _recipe_schedule(recipe).get("init")
    if init and not probe.is_demo and config.model.backbone == "unet" and "init" not in config.model.backbone_args:
        changes["model"] = dataclasses.replace(config.model, backbone_args={**config.model.backbone_args, "init": init})
    if config.warmup_steps is None:
        changes["warmup_steps"] = max(1, config.steps // 20)
    if config.checkpoint_every is None:
        changes["checkpoint_every"] = max(1, min(1000, config.steps))
    if config.out is None:
        changes["out"] = default_pretrain_out(dim)
    if config.method == "cover" and "recipe" not in config.method_options:
        from cover.methods.cover import DEFAULT_RECIPE

        # Named in config.yaml, so a run's recipe never depends on the installed version's default.
        changes["method_options"] = {**config.method_options, "recipe": DEFAULT_RECIPE}
    config = dataclasses.replace(config, **changes)
    _validate_device(config.device)
    from cover.devices import fill_device_defaults

    config = fill_device_defaults(config)
    validate_pretrain_config(config)
    return config


def _resolve_nnunet(config: PretrainConfig, given_model: dict[str, Any], size_given: bool) -> PretrainConfig:
    """``--backbone nnunet``: architecture from the plans; heads and size from it unless given."""
    from cover.nn.nnunet_backbone import default_heads, resolve_backbone_args, stage_strides

    args = resolve_backbone_args(config.model.backbone_args, config.dim)
    levels = len(stage_strides(args["architecture"]))
    model = dataclasses.replace(
        config.model,
        backbone_args=args,
        heads=tuple(config.model.heads) if "heads" in given_model else default_heads(levels),
    )
    size = config.size if size_given or not args.get("patch_size") else tuple(args["patch_size"])
    return dataclasses.replace(config, model=model, size=size)


def pyramid_shape(model: ModelConfig, dim: int) -> tuple[int, tuple[int, ...], str]:
    """Pyramid levels, per-axis size divisors and why, for the configured backbone.

    Args:
        model: The model config (for ``nnunet``, with its resolved ``architecture``).
        dim: 2 or 3.

    Returns:
        ``(levels, divisors, reason)``.
    """
    if model.backbone == "nnunet" and "architecture" in model.backbone_args:
        from cover.nn.nnunet_backbone import pyramid_divisors, stage_strides

        architecture = model.backbone_args["architecture"]
        return len(stage_strides(architecture)), pyramid_divisors(architecture), "the nnU-Net plans' strides"
    depth = len(model.channels) // 2
    return depth + 1, (2**depth,) * dim, f"the U-Net down-samples {depth} times"


#: One value check: ``(passed, key, message)``, raised as ``key: message``.
Check = tuple[bool, str, str]


def _model_checks(model: ModelConfig, levels: int) -> list[Check]:
    """The checks of the network settings, for a backbone with ``levels`` pyramid levels."""
    return [
        (
            model.window_radius >= 1,
            "model.window_radius",
            f"{model.window_radius} is not allowed (allowed: integers >= 1)",
        ),
        (model.head_dim >= 1, "model.head_dim", "must be at least 1"),
        (len(model.heads) == levels, "model.heads", f"needs one entry per pyramid level ({levels})"),
        (all(h >= 1 for h in model.heads), "model.heads", "entries must be >= 1"),
    ]


def _view_checks(views: ViewConfig) -> list[Check]:
    """The checks of the view generator's ranges (docs/method.md §3)."""
    return [
        (views.source_scale >= 1.0, "views.source_scale", "must be >= 1"),
        (
            views.scale_range[0] > 0 and views.scale_range[0] <= views.scale_range[1],
            "views.scale_range",
            "needs 0 < low <= high",
        ),
        (0 <= views.block_prob <= 1, "views.block_prob", "must be in [0, 1]"),
        (
            0 < views.block_size_range[0] <= views.block_size_range[1] <= 1,
            "views.block_size_range",
            "needs 0 < low <= high <= 1 (fractions of the image)",
        ),
        (
            0 < views.gamma_range[0] <= views.gamma_range[1],
            "views.gamma_range",
            "needs 0 < low <= high",
        ),
        (views.bias_std >= 0, "views.bias_std", "must be >= 0"),
        (0 < views.bias_spacing <= 1, "views.bias_spacing", "must be in (0, 1] (a fraction of the size)"),
        (
            0 <= views.contrast_range[0] <= views.contrast_range[1],
            "views.contrast_range",
            "needs 0 <= low <= high",
        ),
        *(
            (getattr(views, name) >= 0, f"views.{name}", "must be >= 0")
            for name in (
                "rotation_deg",
                "translation",
                "shear_deg",
                "elastic_magnitude",
                "noise_std_max",
                "blur_sigma_max",
                "brightness_std",
            )
        ),
        (views.elastic_spacing > 0, "views.elastic_spacing", "must be positive"),
        (
            views.max_displacement is None or views.max_displacement > 0,
            "views.max_displacement",
            "must be positive (voxels), or null for no limit",
        ),
        (views.max_blocks >= 0, "views.max_blocks", "must be >= 0"),
        (views.num_rotations in (0, 1, 2), "views.num_rotations", "must be 0, 1 or 2"),
    ]


def validate_pretrain_config(config: PretrainConfig) -> None:
    """Check values that types alone do not catch; raise one-line :class:`ConfigError` s.

    Args:
        config: A resolved config.
    """
    levels, divisors, reason = pyramid_shape(config.model, config.dim)
    divisor = divisors[0] if len(set(divisors)) == 1 else list(divisors)
    checks: list[Check] = [
        (
            len(config.size) == len(divisors)
            and all(s > 0 and s % d == 0 for s, d in zip(config.size, divisors, strict=True)),
            "size",
            f"{list(config.size)} must be positive multiples of {divisor} ({reason})",
        ),
        (config.batch_size >= 1, "batch_size", "must be at least 1"),
        (config.steps >= 1, "steps", "must be at least 1"),
        (config.lr > 0, "lr", f"{config.lr} must be positive"),
        (config.weight_decay >= 0, "weight_decay", "must be >= 0"),
        (config.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
        (config.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)"),
        (config.checkpoint_every >= 1, "checkpoint_every", "must be at least 1"),
        (config.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1"),
        (config.checkpoint_minutes is None or config.checkpoint_minutes > 0, "checkpoint_minutes", "must be positive"),
        (config.max_nonfinite_steps >= 1, "max_nonfinite_steps", "must be at least 1"),
        (config.log_every >= 1, "log_every", "must be at least 1"),
        (config.num_workers >= 0, "num_workers", "must be >= 0"),
        (config.cache_memory_mb > 0, "cache_memory_mb", "must be positive"),
        (config.eval_pairs >= 1, "eval_pairs", "must be at least 1"),
        (config.in_channels >= 1, "in_channels", "must be at least 1"),
        (0 <= config.slice_axis < 3, "slice_axis", "must be 0, 1 or 2"),
        (config.vec_weight >= 0, "vec_weight", "must be >= 0"),
        (config.con_weight >= 0, "con_weight", "must be >= 0"),
        (
            config.spacing is None or all(s > 0 for s in config.spacing),
            "spacing",
            f"{list(config.spacing or [])} is not allowed (allowed: positive voxel sizes in mm)",
        ),
        *_model_checks(config.model, levels),
        *_view_checks(config.views),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{key}: {message}")
    _validate_device(config.device)
    if config.intensity not in (None, "", "auto"):
        from cover.data.presets import parse_preset

        parse_preset(config.intensity)


def _validate_device(name: str) -> None:
    """Check a device name's spelling (availability is checked when the run starts)."""
    import torch

    allowed = "allowed: auto, cpu, cuda, cuda:N"
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {name!r} is not a device ({allowed})") from None
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ConfigError(f"device: {name!r} is not supported ({allowed})")
