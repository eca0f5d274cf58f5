"""Configuration of ``cover benchmark``: fields, presets, validation with one-line messages.

Every method is pretrained with the same backbone, the same view generator and the same step
budget (``pretrain`` + the dimension's ``pretrain_2d``/``pretrain_3d``; only
``method_options`` differ), then fine-tuned with the same recipe (``finetune`` + the task's
``finetune``) for every task, label budget and seed.

Presets (``--preset``; a config file and options override them):

* ``quick``: a smoke run (a small U-Net, a few steps, 1 seed), at most about 5 minutes on 2
  CPU cores;
* ``default``: ``mni-regions-2d`` (pseudo-subjects, 6 anatomical regions) with a half-width
  U-Net, 3 seeds, 1/2/8 labeled subjects, fine-tuning run to convergence: validation every 20
  steps on a fifth of the labeled pool, stop after 32 validations without gain, constant
  learning rate after a 15-step warm-up, so ``max(4000, 40 n)`` steps are only a safety cap
  (``FINETUNE_TO_CONVERGENCE``); the best-validated checkpoint tested; views with the task's
  kind of variation (``TASK_VIEWS_2D``);
* ``paper``: the paper's recipe, for a GPU (days per method at the paper's length; ``--dry-run``
  shows every pretraining run's numbers): the paper's U-Net with the authors' initialisation,
  384 px crops from 576 px sources, batch 24, learning rate ``1e-4 * 24 / 256``, no warm-up and a
  cosine decay over 467,200 steps (the release's 100 epochs of 112,120 images), ``recipe:
  paper`` and the authors' views with the release's ranges (docs/method.md §3, §8); 3D: the same
  rule at batch 4 with the 3D generalisation of those views. Fine-tuning on both built-in tasks.
  No CPU-sized variant: at the paper's rate (1.6e-6 at batch 4) a minutes-long run learns almost
  nothing (docs/method.md §11 D2), so a small version would not be this recipe.

The same presets are written out as ``configs/benchmark/{quick,default,paper}.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cover.benchmarking.tasks import TaskConfig, resolve_task
from cover.config import (
    ModelConfig,
    PretrainConfig,
    deep_merge,
    load_yaml,
    paper_lr,
    renamed_keys,
    resolve_pretrain_config,
    to_dict,
    update_dataclass,
)
from cover.errors import ConfigError
from cover.views import ViewConfig

HALF_CHANNELS = [16, 32, 64, 128, 256, 128, 64, 32, 16]

#: The 2D demo's view ranges (milder than the paper's, matched to 64 px crops of 96 px slices).
DEMO_VIEWS_2D: dict[str, Any] = {
    "rotation_deg": 10.0,
    "num_rotations": 1,
    "scale_range": [0.85, 1.15],
    "translation": 0.08,
    "shear_deg": 4.0,
}

#: ``default`` preset's 2D views: ranges like the ``mni-regions-2d`` pseudo-subjects' (rotation, scale, shear,
#: a smooth elastic field of about 3 px on a 12 px grid; gamma 0.6-1.6, bias field 0.3, blur and noise for the
#: resolution and noise changes). Chosen by validation Dice (benchmarks/results/README.md, stop 14): COVER,
#: 600 steps, n = 1, seeds 0 and 1: 73.0 with them against 70.1 with DEMO_VIEWS_2D (scratch 72.1).
TASK_VIEWS_2D: dict[str, Any] = {
    **DEMO_VIEWS_2D,
    "rotation_deg": 15.0,
    "scale_range": [0.8, 1.2],
    "shear_deg": 5.0,
    "elastic": True,
    "elastic_magnitude": 0.03,
    "elastic_spacing": 0.125,
    "gamma_range": [0.6, 1.6],
    "bias_std": 0.3,
    "blur_sigma_max": 1.0,
    "noise_std_max": 0.05,
}

#: ``paper`` preset's views: the authors' style with the reference ranges (the release's in 2D), every setting
#: spelled out so that none of the demo's milder ranges (the built-in data's defaults) remains.
PAPER_VIEWS: dict[int, dict[str, Any]] = {
    dim: {**to_dict(ViewConfig.reference(dim)), "style": "authors"} for dim in (2, 3)
}

#: ``default`` preset's fine-tuning: ended by patience, not by the step count. The learning rate is constant
#: after a fixed warm-up (and validation has a fixed interval), so the cap changes nothing before it is reached.
#: 32 validations every 20 steps (640 steps without gain): on mni-regions-2d 8 were too few for two pretrained
#: cells and 16 too few for a third (COVER n = 2 found a checkpoint 1.6 test points better 740 steps after
#: its best under 16); the cap, max(4000, 40 n), stays clear of the latest stop seen with 32 (step 2,000)
#: (benchmarks/results/convergence).
FINETUNE_TO_CONVERGENCE: dict[str, Any] = {
    "steps": 4000,
    "lr_schedule": "constant",
    "warmup_steps": 15,
    "val_every": 20,
    "patience": 32,
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "methods": ["scratch", "dense-infonce", "simclr", "cover"],
        "seeds": [0],
        "model": {"channels": [8, 16, 32, 64, 128, 64, 32, 16, 8], "heads": [2, 2, 2, 1, 1], "head_dim": 4},
        "pretrain": {"steps": 30, "batch_size": 4, "lr": 1e-3, "warmup_steps": 3},
        "pretrain_2d": {"size": 64, "views": DEMO_VIEWS_2D},
        "finetune": {"steps": 30, "batch_size": 4, "size": 64, "lr": 2e-3},
        "tasks": [{"name": "mni-tissue-2d", "budgets": [1, 8]}],
        "analyze": {"samples_per_class": 200, "max_distance": 4},
    },
    "default": {
        "methods": ["scratch", "dense-infonce", "simclr", "cover"],
        "seeds": [0, 1, 2],
        "model": {"channels": HALF_CHANNELS},
        "pretrain": {"steps": 600, "batch_size": 4, "lr": 1e-3, "warmup_steps": 30},
        "pretrain_2d": {"size": 64, "views": TASK_VIEWS_2D},
        # transfer: encoder, chosen by validation Dice (benchmarks/results/README.md, stop 14)
        "finetune": {**FINETUNE_TO_CONVERGENCE, "batch_size": 4, "size": 64, "lr": 2e-3, "transfer": "encoder"},
        "val_fraction": 0.2,
        "steps_per_case": 40,
        "tasks": [{"name": "mni-regions-2d", "budgets": [1, 2, 8]}],
        "analyze": {"samples_per_class": 500, "max_distance": 8},
    },
    "paper": {
        "methods": ["scratch", "dense-infonce", "simclr", "cover"],
        "seeds": [0, 1, 2, 3, 4],
        "model": {"backbone_args": {"init": "authors"}},
        "pretrain": {"warmup_steps": 0},
        "pretrain_2d": {
            "size": 384,
            "batch_size": 24,
            "steps": 467_200,
            "lr": paper_lr(24),
            "views": PAPER_VIEWS[2],
        },
        "pretrain_3d": {"size": 48, "batch_size": 4, "steps": 200_000, "lr": paper_lr(4), "views": PAPER_VIEWS[3]},
        "method_options": {"cover": {"recipe": "paper"}},
        "finetune": {"steps": 2000, "lr": 1e-3},
        "tasks": [
            {"name": "mni-tissue-2d", "budgets": [1, 2, 4, 8], "finetune": {"size": 96, "batch_size": 8}},
            {
                "name": "mni-tissue-3d",
                "budgets": [1, 2, 4, 8],
                "num_train": 8,
                "num_test": 4,
                "finetune": {"size": 48, "batch_size": 2},
            },
        ],
        "analyze": {"samples_per_class": 1000, "max_distance": 16},
    },
}


@dataclass
class BenchmarkConfig:
    """Everything ``cover benchmark`` needs.

    Attributes:
        preset: The preset the values started from (``quick``, ``default``, ``paper``).
        out: Output folder (re-running into it skips finished work).
        methods: Registered methods to compare (``scratch`` = no pretraining).
        seeds: Fine-tuning seeds (labeled subset, sampling, augmentation and new weights).
        model: Backbone and head settings shared by every method
            (:class:`cover.config.ModelConfig` keys).
        pretrain: :class:`cover.config.PretrainConfig` keys shared by every method (steps,
            batch size, learning rate, views, ``data`` for your own unlabeled images...).
        pretrain_2d: Overrides for 2D pretraining (size, views, ...).
        pretrain_3d: Overrides for 3D pretraining.
        method_options: Method -> its ``method_options`` (e.g. dense-infonce's temperature).
        finetune: :class:`cover.downstream.config.FinetuneConfig` keys shared by every task
            (``patience`` stops a cell early after that many validations without improvement;
            with ``lr_schedule: constant`` the steps are only a cap, and a cell that reaches
            it is reported).
        val_fraction: Fraction of each task's labeled pool held out per seed for validation
            (the same cases for every budget of a seed, never a test case). Above 0 every
            cell validates ``finetune.val_every`` steps and the best-validated checkpoint is
            tested; 0: no validation, the last checkpoint is tested.
        steps_per_case: Fine-tuning steps per labeled case: a cell with budget ``n`` trains
            ``max(finetune.steps, steps_per_case * n)`` steps, so larger budgets are not cut
            short (0: ``finetune.steps`` for every budget).
        tasks: Task entries (:class:`cover.benchmarking.tasks.TaskConfig` keys).
        analyze: Options of :func:`cover.analysis.analyze.analyze` for the feature analysis
            of each method (``false`` to skip it).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        notes: Free text written into ``results.md`` (e.g. what else ran on the machine).
    """

    preset: str | None = None
    out: str = "cover_runs/benchmark"
    methods: tuple[str, ...] = ("scratch", "dense-infonce", "simclr", "cover")
    seeds: tuple[int, ...] = (0, 1, 2)
    model: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    pretrain_2d: dict[str, Any] = field(default_factory=dict)
    pretrain_3d: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.0
    steps_per_case: int = 0
    tasks: tuple[dict, ...] = ({"name": "mni-tissue-2d"},)
    analyze: dict[str, Any] | bool = True
    device: str = "auto"
    notes: str | None = None

    def task_configs(self) -> list[TaskConfig]:
        """The validated tasks."""
        return [resolve_task(dict(t), i) for i, t in enumerate(self.tasks)]


#: The sections of :class:`cover.config.PretrainConfig` keys.
PRETRAIN_SECTIONS = ("pretrain", "pretrain_2d", "pretrain_3d")
#: Keys a benchmark controls itself in the pretraining and fine-tuning configs.
_RESERVED_PRETRAIN = ("method", "method_options", "out", "dim", "resume", "overwrite", "model", "device")
_RESERVED_FINETUNE = (
    "pretrained",
    "images",
    "labels",
    "datalist",
    "val_images",
    "val_labels",
    "val_datalist",
    "num_labeled",
    "label_fraction",
    "seed",
    "out",
    "overwrite",
    "dim",
    "device",
    "evaluate_test",
    "select",
)


def resolve_benchmark_config(
    config: BenchmarkConfig | dict[str, Any] | str | Path | None = None, **options: Any
) -> BenchmarkConfig:
    """Build and validate a benchmark config: preset, then the config (file or dict), then options.

    Args:
        config: A :class:`BenchmarkConfig`, a dict of its keys, a YAML path, or ``None``.
        **options: Keys overriding ``config`` (``None`` values are ignored); ``preset`` picks
            the starting values.

    Returns:
        The validated config.
    """
    if isinstance(config, BenchmarkConfig):
        values = dataclasses.asdict(config)
    elif isinstance(config, (str, Path)):
        values = load_yaml(config)
    else:
        values = dict(config or {})
    values = deep_merge(values, {k: v for k, v in options.items() if v is not None})
    preset = values.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset: {preset!r} is not allowed (allowed: {', '.join(PRESETS)})")
    base = copy.deepcopy(PRESETS[preset]) if preset else {}
    for key in ("tasks", "methods", "seeds"):  # lists replace, they do not merge
        if key in values:
            base.pop(key, None)
    resolved = update_dataclass(BenchmarkConfig(), _current_names(deep_merge(base, values)))
    validate_benchmark_config(resolved)
    return resolved


def _current_names(values: dict[str, Any]) -> dict[str, Any]:
    """The sections' old key names (``preset`` for the intensity preset) replaced, each with a notice."""
    from cover.downstream.config import FinetuneConfig

    values = dict(values)
    for key in PRETRAIN_SECTIONS:
        if isinstance(values.get(key), dict):
            values[key] = renamed_keys(PretrainConfig(), values[key], f"{key}.")
    if isinstance(values.get("finetune"), dict):
        values["finetune"] = renamed_keys(FinetuneConfig(), values["finetune"], "finetune.")
    tasks = values.get("tasks")
    if isinstance(tasks, (list, tuple)):
        values["tasks"] = [_task_names(t, i) if isinstance(t, dict) else t for i, t in enumerate(tasks)]
    return values


def _task_names(task: dict[str, Any], index: int) -> dict[str, Any]:
    from cover.downstream.config import FinetuneConfig

    task = renamed_keys(TaskConfig(), task, f"tasks[{index}].")
    if isinstance(task.get("finetune"), dict):
        task["finetune"] = renamed_keys(FinetuneConfig(), task["finetune"], f"tasks[{index}].finetune.")
    return task


def model_options(config: BenchmarkConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pretraining ``model`` and fine-tuning (scratch) ``model`` from the shared model settings."""
    model = to_dict(update_dataclass(ModelConfig(), config.model, prefix="model."))
    return model, {"backbone": model["backbone"], "channels": model["channels"]}


def pretrain_values(config: BenchmarkConfig, method: str, dim: int) -> dict[str, Any]:
    """The :func:`cover.pretrain` values of one method's pretraining in ``dim`` dimensions."""
    values = deep_merge(config.pretrain, config.pretrain_2d if dim == 2 else config.pretrain_3d)
    values.update(
        method=method,
        dim=dim,
        model=model_options(config)[0],
        method_options=dict(config.method_options.get(method, {})),
    )
    return values


def resolved_pretraining(config: BenchmarkConfig, tasks: list[TaskConfig]) -> dict[str, dict[str, Any]]:
    """Every pretraining run as :func:`cover.pretrain` resolves it, by ``METHOD-DIMd`` (``out`` left out)."""
    from cover.methods.scratch import is_pretrained

    runs = {}
    for dim in sorted({t.dim for t in tasks}):
        for method in filter(is_pretrained, config.methods):
            run = to_dict(resolve_pretrain_config(pretrain_values(config, method, dim)))
            run.pop("out", None)
            runs[f"{method}-{dim}d"] = run
    return runs


def finetune_values(
    config: BenchmarkConfig, task: TaskConfig, data: dict[str, str | None], budget: int, seed: int
) -> dict[str, Any]:
    """The :func:`cover.finetune` values of one cell (task, label budget, seed)."""
    values = deep_merge(config.finetune, task.finetune)
    values.update(
        task="seg",
        dim=task.dim,
        images=data["images"],
        labels=data["labels"],
        datalist=data["datalist"],
        num_labeled=budget,
        val_fraction=config.val_fraction,
        select="best" if config.val_fraction > 0 else "last",
        seed=seed,
        intensity=task.intensity,
        class_names=list(task.class_names) if task.class_names else None,
        model=model_options(config)[1],
        evaluate_test=False,
    )
    if task.label_values:  # only when given: the fingerprints of runs without it stay as they were
        values["label_values"] = list(task.label_values)
    if config.steps_per_case:
        values["steps"] = max(values.get("steps") or 0, config.steps_per_case * budget)
    return values


def _check_sections(config: BenchmarkConfig, tasks: list[TaskConfig]) -> None:
    """Every key of the pretraining and fine-tuning sections, and each run's resolved config.

    A mistake in a section (an unknown key, a size the network cannot take) is reported
    before any pretraining starts, named by its section.
    """
    from cover.downstream.config import FinetuneConfig, resolve_finetune_config
    from cover.methods.scratch import is_pretrained

    for key in PRETRAIN_SECTIONS:
        update_dataclass(PretrainConfig(), getattr(config, key), prefix=f"{key}.")
    update_dataclass(FinetuneConfig(), config.finetune, prefix="finetune.")
    for dim in sorted({t.dim for t in tasks}):
        for method in filter(is_pretrained, config.methods):
            try:
                resolve_pretrain_config(pretrain_values(config, method, dim))
            except ConfigError as error:
                raise ConfigError(f"pretrain ({method}, {dim}D): {error}") from None
    for index, task in enumerate(tasks):
        update_dataclass(FinetuneConfig(), task.finetune, prefix=f"tasks[{index}].finetune.")
        paths = {"images": task.images, "labels": task.labels, "datalist": task.datalist}
        if task.builtin:  # its files are written when the benchmark starts
            paths = {"images": "built-in", "labels": "built-in", "datalist": None}
        try:
            resolve_finetune_config(finetune_values(config, task, paths, max(task.budgets), config.seeds[0]))
        except ConfigError as error:
            raise ConfigError(f"tasks[{index}] '{task.name}' fine-tuning: {error}") from None


def validate_benchmark_config(config: BenchmarkConfig) -> None:
    """Raise a one-line :class:`ConfigError` for values that types alone do not catch.

    Args:
        config: A resolved config.
    """
    from cover.methods import METHODS

    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"methods: {unknown} unknown (allowed: {', '.join(sorted(METHODS))})")
    if not config.methods:
        raise ConfigError("methods: give at least one method")
    if len(set(config.methods)) != len(config.methods):
        raise ConfigError(f"methods: {list(config.methods)} lists a method twice")
    if not config.seeds:
        raise ConfigError("seeds: give at least one seed")
    for key, reserved in (
        ("pretrain", _RESERVED_PRETRAIN),
        ("pretrain_2d", _RESERVED_PRETRAIN),
        ("pretrain_3d", _RESERVED_PRETRAIN),
        ("finetune", _RESERVED_FINETUNE),
    ):
        taken = sorted(set(getattr(config, key)) & set(reserved))
        if taken:
            raise ConfigError(f"{key}: {taken} are set by the benchmark itself (use model/methods/seeds/tasks)")
    for name in config.method_options:
        if name not in config.methods:
            raise ConfigError(f"method_options: '{name}' is not one of the methods {list(config.methods)}")
    if isinstance(config.analyze, dict):
        allowed = ("samples_per_class", "max_distance", "include_background", "embedding", "max_images", "seed")
        unknown = sorted(set(config.analyze) - set(allowed))
        if unknown:
            raise ConfigError(f"analyze: unknown keys {unknown} (allowed: {', '.join(allowed)})")
    if not 0 <= config.val_fraction < 1:
        raise ConfigError(f"val_fraction: {config.val_fraction} must lie in [0, 1)")
    if config.steps_per_case < 0:
        raise ConfigError(f"steps_per_case: {config.steps_per_case} must be 0 or more")
    tasks = config.task_configs()
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: {names} lists a task name twice")
    for task in tasks:
        taken = sorted(set(task.finetune) & set(_RESERVED_FINETUNE))
        if taken:
            raise ConfigError(f"tasks '{task.name}'.finetune: {taken} are set by the benchmark itself")
        if task.builtin and task.num_train is not None and config.val_fraction > 0:
            from cover.downstream.cases import split_cases

            try:
                split_cases(task.num_train, seed=0, val_fraction=config.val_fraction, num_labeled=max(task.budgets))
            except ConfigError as error:
                raise ConfigError(
                    f"tasks '{task.name}'.budgets: {error} (val_fraction {config.val_fraction})"
                ) from None
    _check_sections(config, tasks)
