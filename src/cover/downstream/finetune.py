"""Fine-tuning and linear probing behind ``cover finetune`` and :func:`cover.finetune`.

A pretrained backbone (or a freshly initialised one: the scratch baseline, same recipe) gets
a new head and is trained on labeled cases:

- segmentation: 1x1(x1) convolution on the finest decoder features, MONAI ``DiceCELoss``,
  random crops of the training size, flips (off along an axis where the labels are split by
  side, :mod:`cover.downstream.flips`) + small affine + intensity augmentation;
  validation by whole-image (sliding-window) inference and mean foreground Dice;
- classification: linear layer on pooled bottleneck features, cross-entropy, validation AUC.

Adam with linear warm-up and cosine decay, gradient clipping; ``freeze=encoder`` or
``freeze=all`` (linear probe) keep pretrained parts fixed. The output folder holds
``config.yaml``, ``split.json`` (which cases were labeled, validation, unused), ``log.csv``,
TensorBoard events, ``curves.png``, ``best.pt`` (best validation score), ``last.pt`` and
``summary.json``. Checkpoints carry plain-JSON metadata (task, classes, preset, patch size,
backbone) so ``cover evaluate``/``cover predict`` need nothing else.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

import cover
from cover.config import run_values, save_yaml, to_dict
from cover.data.channels import source_files, source_value
from cover.data.datasets import preset_note
from cover.data.labels import count_classes, read_label_map
from cover.data.presets import PER_FILE
from cover.data.record import data_error
from cover.devices import apply_backend_settings
from cover.downstream.batches import BatchSampler
from cover.downstream.cases import Case, check_channels, datalist_validation, find_cases, split_cases
from cover.downstream.config import FinetuneConfig, dim_of_checkpoint, resolve_finetune_config, resolve_steps
from cover.downstream.finetune_task import CHECKPOINT_FORMAT, FinetuneTask, Progress, Validation
from cover.downstream.flips import check_flips
from cover.downstream.loading import LoadedCase, load_case
from cover.downstream.optim import build_optimizer, transferred
from cover.downstream.outputs import check_output
from cover.engine.checkpoint import CHECKPOINT_DIR, load_states, remove_partial_files, resume_state
from cover.engine.distributed import DistributedContext, barrier, init_distributed, shutdown_distributed
from cover.engine.guards import summary_if_interrupted
from cover.engine.layout import use_channels_last
from cover.engine.loop import Engine, LoopOptions, LoopResult, Parts, Resumed
from cover.engine.memory import fit_or_stop
from cover.engine.precision import check_amp, grad_scaler
from cover.errors import ConfigError, CoverError
from cover.models.loading import Checkpoint, build_network, load_weights, pretrained_preset, read_checkpoint
from cover.models.networks import freeze_backbone, save_finetuned
from cover.runtime import json_safe, progress_bar

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FORMAT", "finetune"]


@dataclasses.dataclass
class _Data:
    """Where the cases come from, after the demo has been written out."""

    images: str | None
    labels: str | None
    datalist: str | None
    val_images: str | None
    val_labels: str | None
    val_datalist: str | None
    test_images: str | None = None
    test_labels: str | None = None


def _data_sources(config: FinetuneConfig) -> _Data:
    """User data folders/datalists of a non-demo run."""
    return _Data(
        config.images, config.labels, config.datalist, config.val_images, config.val_labels, config.val_datalist
    )


def _backbone_spec(config: FinetuneConfig) -> tuple[dict[str, Any], Checkpoint | None, dict[str, Any]]:
    """Backbone description, the pretrained checkpoint (or ``None``) and information about its source."""
    if config.pretrained is None:
        spec = {
            "backbone": config.model.backbone,
            "backbone_args": {"channels": list(config.model.channels)},
            "spatial_dims": config.dim,
            "in_channels": config.in_channels,
        }
        return spec, None, {"pretrained": None}
    pretrained = read_checkpoint(config.pretrained)
    metadata, path = pretrained.metadata, pretrained.source
    dims, channels = int(metadata["spatial_dims"]), int(metadata["in_channels"])
    if dims != config.dim:
        raise ConfigError(f"dim: {config.dim} but the pretrained checkpoint {path} is {dims}D; use --dim {dims}")
    if channels != config.in_channels:
        raise ConfigError(f"in_channels: {config.in_channels} but the pretrained checkpoint {path} expects {channels}")
    spec = {
        "backbone": metadata["backbone"],
        "backbone_args": dict(metadata.get("backbone_args") or {}),
        "spatial_dims": dims,
        "in_channels": channels,
    }
    source = {
        "pretrained": str(path),
        "pretrained_method": metadata.get("method"),
        "pretrained_preset": pretrained_preset(metadata),
        "encoder_only": pretrained.encoder_only,
    }
    return spec, pretrained, source


def _select_cases(config: FinetuneConfig, data: _Data) -> tuple[list[Case], list[Case], list[Case], list[str] | None]:
    cases, class_names = find_cases(config.task, data.images, data.labels, data.datalist)
    explicit_val = data.val_images is not None or data.val_datalist is not None
    given = None if explicit_val else datalist_validation(data.datalist)  # a datalist's own split wins
    pool = [c for c, v in zip(cases, given, strict=True) if not v] if given else cases
    split = split_cases(
        len(pool),
        seed=config.seed,
        val_fraction=0.0 if explicit_val or given else config.val_fraction,
        label_fraction=config.label_fraction,
        num_labeled=config.num_labeled,
    )
    train = [pool[i] for i in split["train"]]
    unused = [pool[i] for i in split["unused"]]
    val = [c for c, v in zip(cases, given, strict=True) if v] if given else [pool[i] for i in split["val"]]
    if explicit_val:
        val, val_names = find_cases(config.task, data.val_images, data.val_labels, data.val_datalist)
        if config.task == "cls":
            val = _remap_classes(val, val_names or [], class_names or [], data.val_images or data.val_datalist)
    return train, val, unused, class_names


def _remap_classes(cases: list[Case], names: list[str], known: list[str], source: Any) -> list[Case]:
    """Express class indices of ``cases`` (over ``names``) in the training classes ``known``."""
    lookup = {name: i for i, name in enumerate(known)}
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise data_error(source, f"classes {unknown} do not occur in the training labels {known}")
    return [dataclasses.replace(c, target=lookup[names[c.target]]) for c in cases]


def _write_split(out: Path, config: FinetuneConfig, train: list[Case], val: list[Case], unused: list[Case]) -> None:
    def listing(cases: list[Case]) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "image": source_value(c.image)}
            | ({"label": str(c.label)} if c.label is not None else {})
            | ({"target": c.target} if c.target is not None else {})
            for c in cases
        ]

    split = {
        "seed": config.seed,
        "label_fraction": config.label_fraction,
        "num_labeled": len(train),
        "train": listing(train),
        "val": listing(val),
        "unused": listing(unused),
    }
    (out / "split.json").write_text(json.dumps(split, indent=2))


def _load(cases: list[Case], config: FinetuneConfig, preset: str | None, desc: str) -> list[LoadedCase]:
    return [
        load_case(
            c,
            task=config.task,
            dim=config.dim,
            preset=preset,
            in_channels=config.in_channels,
            size=config.size,
            label_values=config.label_values,
        )  # fmt: skip
        for c in progress_bar(cases, desc=desc, leave=False, disable=len(cases) < 20)
    ]


def _num_classes(
    config: FinetuneConfig, loaded: list[LoadedCase], class_names: list[str] | None, others: list[Case]
) -> int:
    """Number of classes ``K``: from every label given, not only the labeled subset.

    Segmentation: ``num_classes``, else one per ``label_values`` or ``class_names``, else the
    largest label over the training, validation and unused (``others``) label maps plus one,
    provided the values found are exactly ``0..K-1`` (:func:`cover.data.labels.count_classes`),
    so a run on a few labeled cases gets the head the whole label set needs.
    """
    if config.task == "cls":
        found = len(class_names or [])
        if found < 2:
            raise CoverError(f"labels: classification needs at least 2 classes, found {class_names}")
        if config.num_classes is not None and config.num_classes < found:
            raise ConfigError(f"num_classes: {config.num_classes} but the labels hold {found} classes")
        return config.num_classes or found
    values = [(c.case.label, torch.unique(c.label).numpy()) for c in loaded]
    values += [(c.label, np.unique(read_label_map(str(c.label), None, config.label_values))) for c in others if c.label]
    declared = [
        (config.num_classes, f"num_classes is {config.num_classes}"),
        (len(config.label_values or ()), f"label_values lists {len(config.label_values or ())} classes"),
        (len(config.class_names or ()), f"class_names has {len(config.class_names or ())} names"),
    ]
    count, key = next(((k, key) for k, key in declared if k), (None, ""))
    return count_classes(values, count, key)


def _find_start(config: FinetuneConfig) -> tuple[dict[str, Any] | None, Path | None]:
    """The training state to resume from, or ``(None, None)`` for a fresh start."""
    state, path = resume_state(config.resume, config.out)
    if state is not None and state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"resume: {path} is not a cover finetune training checkpoint")
    return state, path


def _check_out(config: FinetuneConfig, resuming: bool, context: DistributedContext) -> Path:
    """Rank 0 refuses an unusable output folder, creating and changing nothing."""
    out = Path(config.out)
    if context.is_main:
        if resuming:
            if out.exists() and not out.is_dir():
                raise ConfigError(f"out: {out} exists and is not a folder")
        else:
            check_output(out, config.overwrite, "finetune", resumable=True)
    return out


def _prepare(config: FinetuneConfig, resuming: bool, context: DistributedContext) -> Path:
    """Rank 0 checks and creates the output folder; the others wait for it."""
    out = _check_out(config, resuming, context)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resuming:
            remove_partial_files(out)
        else:
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # an overwritten run's states
    barrier(context)
    return out


def finetune(config: FinetuneConfig | dict[str, Any] | str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Fine-tune (or linear-probe) a pretrained backbone, or train from scratch, on labeled data.

    Runs in one process, or in several under ``torchrun`` (DDP: ``batch_size`` is global,
    each process trains on its share of every batch, rank 0 validates, logs and writes).
    A first SIGTERM/SIGINT finishes the step, writes a training-state checkpoint and stops;
    ``resume="auto"`` continues from the newest valid one with the same losses.

    Args:
        config: A :class:`~cover.downstream.config.FinetuneConfig`, a dict of its keys, a YAML
            path, or ``None`` (the built-in MNI152 tissue demo when no data is given).
        **options: Config keys overriding ``config`` (same names as the CLI options).

    Returns:
        The run summary (also ``OUT/summary.json``): steps, best/last validation score,
        checkpoint paths, case counts and, for the demo, the test metrics.

    Examples:
        The demo backbone of :func:`cover.pretrain`'s example, fine-tuned on the demo's 8
        labeled MNI152 slices (written to ``runs/seg/demo_data/``), two steps to try it:

        >>> import cover
        >>> summary = cover.finetune(pretrained="runs/demo", out="runs/seg", steps=2, size=32)
        >>> summary["num_train"], summary["class_names"], summary["best_checkpoint"]
        (8, ['background', 'CSF', 'GM', 'WM'], 'runs/seg/best.pt')

        Your own labeled images: ``cover.finetune(pretrained="runs/ct", task="seg",
        images="imgs/", labels="masks/", num_labeled=8, out="runs/seg_ct")``; without
        ``pretrained`` the same recipe trains from scratch.
    """
    config = resolve_finetune_config(dim_of_checkpoint(run_values(config, options, FinetuneConfig.out)))
    context = init_distributed(config.device)
    try:
        return _finetune(config, context)
    finally:
        shutdown_distributed()


@dataclasses.dataclass
class _Cases:
    """The run's cases after the split, loaded, with their classes.

    Attributes:
        out: The output folder (created for the demo, checked otherwise).
        data: Where the cases come from.
        preset: The intensity preset asked for (given or the pretrained run's), or ``None``.
        train_cases: Labeled training cases.
        val_cases: Validation cases.
        unused: Cases left out by the label fraction.
        train: Loaded training cases.
        val: Loaded validation cases.
        num_classes: ``K``.
        names: Class names, or ``None``.
        channel_names: Names of the image channels, or ``None``.
    """

    out: Path
    data: _Data
    preset: str | None
    train_cases: list[Case]
    val_cases: list[Case]
    unused: list[Case]
    train: list[LoadedCase]
    val: list[LoadedCase]
    num_classes: int
    names: list[str] | None
    channel_names: list[str] | None


def _finetune(config: FinetuneConfig, context: DistributedContext) -> dict[str, Any]:
    check_amp(config.amp, context.device)
    apply_backend_settings(config, context.device)
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by {context.world_size} processes")
    state, state_path = _find_start(config)
    resuming = state is not None or bool(config.resume)
    spec, pretrained, source = _backbone_spec(config)  # a bad checkpoint stops before --out is touched
    cases = _cases(config, source, pretrained, resuming, context)
    labels = [c.label for c in cases.train if c.label is not None]
    config, flips = check_flips(config, labels, cases.num_classes, cases.names)
    if context.is_main:
        for line in flips.warnings if flips else ():
            log.warning(line)
    config = resolve_steps(config, len(cases.train))
    out = cases.out
    if not config.is_demo:
        out = _prepare(config, resuming, context)
    if context.is_main:
        _write_split(out, config, cases.train_cases, cases.val_cases, cases.unused)
        save_yaml(config, out / "config.yaml")
        loaded = cases.train + cases.val
        files = [
            {"path": str(source_files(c.case.image)[0]), "preset": c.preset, "preset_reason": c.preset_reason}
            for c in loaded
        ]
        origin = "given" if config.intensity else "from checkpoint"
        log.info("data: %s", preset_note(files, given=bool(cases.preset), origin=origin))
    parts = _parts(config, spec, pretrained, cases.num_classes, context)
    network = parts.model
    resumed, progress = _resume(config.resume, state, state_path, parts, out, context)
    criterion = DiceCELoss(to_onehot_y=True, softmax=True) if config.task == "seg" else nn.CrossEntropyLoss()
    metadata = _metadata(config, spec, network.backbone, cases, source)
    validation = Validation(cases.val, cases.num_classes, int(network.backbone.divisor), metadata, out)
    freeze_steps = config.freeze_steps if pretrained is not None else 0
    task = FinetuneTask(config, parts, criterion, validation, progress, context, freeze_steps)
    if context.is_main:
        origin = f"pretrained={source['pretrained']}" if pretrained is not None else "scratch"
        log.info(
            f"cover finetune: task={config.task} dim={config.dim} {origin} "
            f"freeze={config.freeze} train={len(cases.train)} val={len(cases.val)} classes={cases.num_classes} "
            f"steps={config.steps} batch={config.batch_size} size={list(config.size)} device={context.device} "
            f"processes={context.world_size}"
        )
    network.train()
    sampler = BatchSampler(cases.train, config.batch_size, config.size, config.seed, config.foreground_prob)
    header = {"config": to_dict(config), "metadata": metadata}
    engine = Engine(task, parts, LoopOptions.of(config), context, out, header, resumed)
    result = engine.run(map(sampler.batch, itertools.count(resumed.step)))
    if not context.is_main:
        return {
            "steps": result.done, "processes": context.world_size, "rank": context.rank,
            "parameter_digests": result.digests,
        }  # fmt: skip
    flip_check = flips.record(cases.names, config) if flips else None
    return _finish(config, task, cases, source, result, resumed.step, context, flip_check)


def _cases(
    config: FinetuneConfig,
    source: dict[str, Any],
    pretrained: Checkpoint | None,
    resuming: bool,
    context: DistributedContext,
) -> _Cases:
    """Find, split, check and load the cases (a user's data before ``--out`` is created or changed).

    An earlier run's files, ``--overwrite`` included, stay untouched when the data is refused;
    the demo writes its data into ``--out`` first.
    """
    out = _prepare(config, resuming, context) if config.is_demo else _check_out(config, resuming, context)
    if config.is_demo:
        from cover.data.demo import demo_task_paths, write_demo_task

        if context.is_main:
            write_demo_task(out / "demo_data", size=config.size[0])
        barrier(context)
        paths = demo_task_paths(out / "demo_data")
        # The demo validates on its test slab (no other labeled slices exist); it reports ``select``.
        data = _Data(
            paths["images"], paths["labels"], None, paths["test_images"], paths["test_labels"], None,
            paths["test_images"], paths["test_labels"],
        )  # fmt: skip
    else:
        data = _data_sources(config)
    preset = config.intensity or source.get("pretrained_preset")
    train_cases, val_cases, unused, class_names = _select_cases(config, data)
    theirs = None if pretrained is None else pretrained.metadata.get("channel_names")
    names_from = data.datalist or (data.images if data.labels is None else None)
    channel_names = check_channels(train_cases + val_cases, config.in_channels, names_from, theirs, config.pretrained)
    if not train_cases:
        raise CoverError("no labeled training cases left after the split; lower val_fraction or add data")
    train = _load(train_cases, config, preset, "loading training cases")
    val = _load(val_cases, config, preset, "loading validation cases")
    num_classes = _num_classes(config, train + val, class_names, unused)
    names = list(config.class_names) if config.class_names else class_names
    if names is not None and len(names) != num_classes:
        raise ConfigError(f"class_names: {len(names)} names for {num_classes} classes")
    return _Cases(out, data, preset, train_cases, val_cases, unused, train, val, num_classes, names, channel_names)


def _parts(
    config: FinetuneConfig,
    spec: dict[str, Any],
    pretrained: Checkpoint | None,
    num_classes: int,
    context: DistributedContext,
) -> Parts:
    """The network (pretrained backbone loaded, frozen parts frozen), its optimiser, schedule and scaler."""
    device = context.device
    torch.manual_seed(config.seed)
    network = build_network(config.task, spec, num_classes)
    loaded: set[str] = set()  # backbone weights taken from the checkpoint (the rest is fresh)
    if pretrained is not None:
        source = transferred(pretrained, network.backbone, config.transfer)
        load_weights(network.backbone, source)
        loaded = set(source.weights) & set(network.backbone.state_dict())
    backbone = network.backbone
    try:
        backbone.check_size(config.size)
    except ConfigError as error:
        raise ConfigError(f"size: {error}") from None
    freeze_backbone(network, config.freeze)
    network.to(device)
    fit_or_stop(
        "fine-tuning",
        network,
        lambda twin, probe, batch: twin(torch.rand(batch, config.in_channels, *probe)).float().mean(),
        config.size,
        backbone.divisor,
        config.batch_size,
        context,
        config.amp,
    )
    if config.channels_last:
        use_channels_last(network, backbone.spatial_dims)
    optimizer, scheduler, trainable = build_optimizer(
        network, config.lr, config.weight_decay, config.steps, config.warmup_steps, loaded,
        config.backbone_lr_scale, config.freeze_steps, config.lr_schedule,
    )  # fmt: skip
    compiled = torch.compile(network) if config.compile else None
    return Parts(network, optimizer, scheduler, grad_scaler(config.amp, device), compiled, trainable)


def _resume(
    resume: str | None,
    state: dict[str, Any] | None,
    state_path: Path | None,
    parts: Parts,
    out: Path,
    context: DistributedContext,
) -> tuple[Resumed, Progress]:
    """Load a resumed training state into ``parts`` (``resume``: the option); where the run starts and its progress."""
    if state is None:
        if resume and resume != "auto":
            raise ConfigError(f"resume: {resume} could not be used")
        if resume and context.is_main:
            log.info("no usable checkpoint in %s; starting at step 0", out / CHECKPOINT_DIR)
        return Resumed(), Progress()
    load_states(state_path, parts.states(state))
    progress = Progress(**state.get("progress", {}))
    start = int(state["step"])
    if context.is_main:
        log.info("resuming from %s at step %d", state_path, start)
    return Resumed(start, progress.skipped, progress.seconds, state.get("rng", {})), progress


def _metadata(
    config: FinetuneConfig, spec: dict[str, Any], backbone: nn.Module, cases: _Cases, source: dict[str, Any]
) -> dict[str, Any]:
    """Plain-JSON metadata of the fine-tuned checkpoints (``cover evaluate``/``predict`` need nothing else)."""
    used_presets = sorted({c.preset for c in cases.train + cases.val})
    return {
        "cover_version": cover.__version__,
        "task": config.task,
        "num_classes": cases.num_classes,
        "class_names": cases.names,
        "label_values": list(config.label_values) if config.label_values else None,
        "spatial_dims": spec["spatial_dims"],
        "in_channels": spec["in_channels"],
        "channel_names": cases.channel_names,
        "preset": used_presets[0] if len(used_presets) == 1 else PER_FILE,
        "patch_size": list(config.size),
        "overlap": config.overlap,
        "backbone": spec["backbone"],
        "backbone_args": spec["backbone_args"],
        "divisor": int(backbone.divisor),
        "pyramid_channels": list(backbone.pyramid_channels),
        "freeze": config.freeze,
        "demo": config.is_demo,
        "seed": config.seed,
        **source,
    }


def _finish(
    config: FinetuneConfig,
    task: FinetuneTask,
    cases: _Cases,
    source: dict[str, Any],
    result: LoopResult,
    start: int,
    context: DistributedContext,
    flip_check: dict[str, Any] | None,
) -> dict[str, Any]:
    """Rank 0: ``last.pt`` (and ``best.pt`` without validation), curves, the demo's test, ``summary.json``.

    ``flip_check`` is what the lateralisation check of the labels found and did
    (:meth:`cover.downstream.flips.FlipDecision.record`), ``None`` when nothing was checked.
    """
    out, network, metric, metadata = task.validation.out, task.network, task.metric, task.validation.metadata
    progress, done = task.progress, result.done
    best, best_step, history, last_val = progress.best, progress.best_step, progress.history, progress.last_val
    save_finetuned(out / "last.pt", network, {**metadata, "step": done, metric: last_val.get("score")}, to_dict(config))
    if not cases.val or best == -math.inf:  # nothing to select on
        if cases.val:
            log.warning(
                "no validation gave a score (no class in any validation label or prediction); "
                "best.pt is the last network, step %d",
                done,
            )
        save_finetuned(out / "best.pt", network, {**metadata, "step": done}, to_dict(config))
        best_step = done
    selected = out / ("best.pt" if config.select == "best" else "last.pt")
    summary: dict[str, Any] = {
        "task": config.task,
        "pretrained": source["pretrained"],
        "freeze": config.freeze,
        "seed": config.seed,
        "num_train": len(cases.train),
        "num_val": len(cases.val),
        "num_unused": len(cases.unused),
        "num_classes": cases.num_classes,
        "class_names": cases.names,
        "label_values": list(config.label_values) if config.label_values else None,
        "steps": done,
        "planned_steps": config.steps,
        "start_step": start,
        "processes": context.world_size,
        "parameter_digests": result.digests,
        "nonfinite_steps": result.skipped,
        "seconds": round(result.seconds, 1),
        "final_loss": float(np.mean(history[-max(1, min(20, len(history) // 5)) :])) if history else math.nan,
        f"best_{metric}": best if best > -math.inf else None,
        "best_step": best_step,
        "stopped_by": task.stopped_by(done),
        f"last_{metric}": last_val.get("score"),
        "best_checkpoint": str(out / "best.pt"),
        "last_checkpoint": str(out / "last.pt"),
        "select": config.select,
        "checkpoint": str(selected),
        "flip_check": flip_check,
    }
    if summary["stopped_by"] == "cap":
        log.warning(
            "%s: reached the step cap (steps: %d) before %d validations without gain; the best %s (step %d) "
            "may still improve with more steps",
            out, done, config.patience, metric, best_step,
        )  # fmt: skip
    _plot_curves(out, metric)
    if config.is_demo and config.evaluate_test:
        with summary_if_interrupted(summary, out / "summary.json", "the demo's test-slab evaluation"):
            _demo_test(summary, selected, cases.data, context.device)
    summary = json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    score = summary.get("test", {}).get("mean_dice")
    tail = f", test mean Dice {score:.3f}" if score is not None else ""
    best_text = f"{best:.3f} at step {best_step}" if best > -math.inf else "n/a (no validation cases)"
    log.info("best %s %s%s; results in %s", metric, best_text, tail, out)
    return summary


def _demo_test(summary: dict[str, Any], selected: Path, data: _Data, device: torch.device) -> None:
    """The demo's test-slab metrics of the selected checkpoint, into ``summary``."""
    from cover.downstream.evaluate import evaluate

    test = evaluate(
        selected,
        images=data.test_images,
        labels=data.test_labels,
        out=selected.parent / "test",
        device=str(device),
        overwrite=True,
    )
    summary["test"] = {k: test[k] for k in ("mean_dice", "mean_dice_std", "classes", "num_cases")}
    summary["test_note"] = (
        f"demo: {summary['checkpoint']} on the 10 test-slab slices (z 100-109); the demo validates on this slab, "
        "so it reports the last checkpoint, not the best"
    )


def _plot_curves(out: Path, metric: str) -> None:
    from cover.engine.curves import plot_losses

    plot_losses(out / "log.csv", out / "curves.png", columns=("loss", metric))
