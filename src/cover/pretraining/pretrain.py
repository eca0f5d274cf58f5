"""Pretraining behind ``cover pretrain`` and :func:`cover.pretrain`: the run around the engine.

Checks the config, the output folder, the resumed checkpoint, the model and the data before
anything is written, then trains the method's :class:`~cover.pretraining.task.PretrainTask` with
the :class:`~cover.engine.loop.Engine`, and ends with the endpoint error on new view pairs, figures and
``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import cover
from cover.config import (
    PretrainConfig,
    default_pretrain_out,
    lr_notes,
    resolve_pretrain_config,
    run_values,
    save_yaml,
    to_dict,
)
from cover.devices import apply_backend_settings
from cover.engine.checkpoint import list_checkpoints, load_states, remove_partial_files, resume_state
from cover.engine.distributed import DistributedContext, init_distributed, shutdown_distributed
from cover.engine.guards import summary_if_interrupted
from cover.engine.layout import use_channels_last
from cover.engine.loop import Engine, LoopOptions, LoopResult, Parts, Resumed, adam_warmup_cosine
from cover.engine.memory import fit_or_stop
from cover.engine.precision import check_amp, grad_scaler
from cover.engine.sampler import StepBatchSampler
from cover.errors import ConfigError
from cover.geometry import warp
from cover.losses.masked import endpoint_error
from cover.methods.collapse import describe, is_collapsed
from cover.models.networks import build_model
from cover.nn.mov import pin_schedules
from cover.pretraining.task import COLLAPSE_COLUMNS, PretrainTask
from cover.views import ViewGenerator

log = logging.getLogger(__name__)

_OWN_FILES = {"config.yaml", "log.csv", "summary.json", "loss.png", "flow.png", "checkpoints", "tensorboard"}


def source_size(config: PretrainConfig) -> tuple[int, ...]:
    """Size of the images handed to the view generator: ``source_scale`` x the crop."""
    return tuple(int(round(s * config.views.source_scale)) for s in config.size)


def build_datasets(
    config: PretrainConfig, context: DistributedContext | None = None
) -> tuple[Dataset, Dataset, dict[str, Any]]:
    """Training and held-out datasets following the ``(index, seed)`` key contract.

    Args:
        config: Resolved config.
        context: The processes building the data cache together (the main one shows progress).

    Returns:
        ``(train, heldout, metadata)``.
    """
    size = source_size(config)
    if config.is_demo:
        from cover.data.demo import demo_datasets

        return demo_datasets(config.dim, size)
    from cover.data.datasets import build_pretrain_dataset

    dataset, metadata = build_pretrain_dataset(
        config.data,
        dim=config.dim,
        source_size=size,
        preset=config.intensity,
        spacing=config.spacing,
        cache_dir=config.cache_dir,
        on_bad_file=config.on_bad_file,
        slice_axis=config.slice_axis,
        channels=config.in_channels > 1,
        crop_size=config.size,
        memory_mb=config.cache_memory_mb,
        share=(context.rank, context.world_size) if context is not None else (0, 1),
        progress=context is None or context.is_main,
    )
    if metadata["channels"] != config.in_channels:
        raise ConfigError(
            f"in_channels: {config.in_channels} but the images in {config.data} have {metadata['channels']} "
            f"channel(s); pass --in-channels {metadata['channels']}"
        )
    # Held-out pairs use fresh transforms and item seeds never drawn in training.
    return dataset, dataset, metadata


def check_memory(config: PretrainConfig, model: torch.nn.Module, context: DistributedContext) -> None:
    """Stop before training, with one line naming what to lower, when the run cannot fit.

    See :mod:`cover.engine.memory`: one small-batch forward pass of a CPU copy of ``model`` on
    views of a small crop under the run's precision (MoV schedule: the training device's), scaled to
    ``batch_size`` x ``size``.
    """

    def forward(twin: torch.nn.Module, probe: tuple[int, ...], batch: int) -> torch.Tensor:
        pin_schedules(twin, context.device)  # the CPU copy computes the MoV as the training device will
        scale = config.views.source_scale
        source = torch.rand(batch, config.in_channels, *(round(s * scale) for s in probe))
        views = ViewGenerator(config.views, probe)(source, torch.Generator().manual_seed(0))
        return twin(views)["loss"]

    divisor = model.backbone.divisor
    fit_or_stop("pretraining", model, forward, config.size, divisor, config.batch_size, context, config.amp)


def _check_output(config: PretrainConfig, resuming: bool) -> Path:
    """Refuse an unusable output folder before any work starts (writes nothing)."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (resuming or config.overwrite):
        raise ConfigError(
            f"out: {out} already holds files of another run; pass --resume auto to continue it, "
            "--overwrite to replace its results, or choose another --out"
        )
    return out


def _prepare_output(config: PretrainConfig, resumed: bool, context: DistributedContext) -> Path:
    """Create the output folder once everything is validated.

    A resumed run drops temporary files of a save that was killed half-way; ``--overwrite``
    without a resumed checkpoint removes the earlier run's own results (checkpoints, logs,
    figures) so they cannot mix with the new run's, and leaves any other file alone.
    """
    out = Path(config.out)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resumed:
            remove_partial_files(out)
        elif config.overwrite:
            for name in _OWN_FILES:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    return out


def _resolve(config: PretrainConfig | dict[str, Any] | str | Path | None, options: dict[str, Any]) -> PretrainConfig:
    """Merge a config (object, dict or YAML path), explicit options and, on resume, the saved run."""
    values = run_values(config, options, lambda v: default_pretrain_out(v.get("dim", 2)))
    return resolve_pretrain_config(values)


def run_metadata(config: PretrainConfig, data_metadata: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Plain-JSON metadata stored with every checkpoint and export."""
    backbone = model.backbone
    return {
        "cover_version": cover.__version__,
        "method": config.method,
        "backbone": config.model.backbone,
        "backbone_args": ({} if config.model.backbone == "nnunet" else {"channels": list(config.model.channels)})
        | config.model.backbone_args,
        "spatial_dims": config.dim,
        "in_channels": config.in_channels,
        "channel_names": data_metadata.get("channel_names"),
        "patch_size": list(config.size),
        "divisor": int(backbone.divisor),
        "pyramid_channels": list(backbone.pyramid_channels),
        "data": data_metadata,
        "citation": cover.CITATION,
    }


def _worker_init(_worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process, which stops cleanly.

    (A signal sent to the whole process group, as schedulers do, would otherwise kill the
    workers mid-step.) Worker random seeds need no care: items use their own keys.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _check_device(name: str, amp: str, device: torch.device) -> None:
    """Refuse a device this machine lacks (``name`` as given) or a precision it cannot run."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but no CUDA device is available (use cpu or auto)")
    check_amp(amp, device)


@torch.no_grad()
def evaluate_fields(
    model: torch.nn.Module,
    heldout: Dataset,
    generator: ViewGenerator,
    pairs: int,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Endpoint error of the predicted field on fixed held-out view pairs.

    Args:
        model: A method with ``predict_field`` (COVER).
        heldout: Dataset following the key contract.
        generator: View generator of the run.
        pairs: Number of pairs.
        seed: Evaluation seed (distinct from training seeds).
        device: Device.

    Returns:
        ``{"epe", "epe_zero", "views", "phi"}`` (the last two for figures).
    """
    keys = [(i % len(heldout), 10_000_019 + seed * 7919 + i) for i in range(pairs)]
    source = torch.stack([heldout[k] for k in keys]).to(device)
    views = generator(source, torch.Generator(device=device).manual_seed(987_654_321 + seed))
    model.eval()
    phis = [model.predict_field(views.view_a[i : i + 4], views.view_b[i : i + 4]) for i in range(0, pairs, 4)]
    model.train()
    phi = torch.cat(phis)
    return {
        "epe": float(endpoint_error(phi, views.phi_gt, views.mask)),
        "epe_zero": float(endpoint_error(torch.zeros_like(phi), views.phi_gt, views.mask)),
        "views": views,
        "phi": phi,
    }


def pretrain(config: PretrainConfig | dict[str, Any] | str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Pretrain a backbone on unlabeled images.

    Args:
        config: A :class:`PretrainConfig`, a dict of its keys, a YAML path, or ``None``.
        **options: Config keys that override ``config`` (same names as the CLI options).

    Returns:
        The run summary (also written to ``OUT/summary.json``).

    Examples:
        The built-in demo on the MNI152 template (no data needed), cut to two steps on 32x32
        crops to try it (``cover pretrain`` without options runs the full demo):

        >>> import cover
        >>> summary = cover.pretrain(out="runs/demo", steps=2, size=32)
        >>> summary["method"], summary["steps"], summary["checkpoint"]
        ('cover', 2, 'runs/demo/checkpoints/step_00000002.pt')

        On your own scans the keys are the CLI options' names, e.g.
        ``cover.pretrain(data="scans/", dim=3, size=96, out="runs/ct")``.
    """
    config = _resolve(config, options)
    context = init_distributed(config.device)
    try:
        return _train(config, context)
    finally:
        shutdown_distributed()


def _train(config: PretrainConfig, context: DistributedContext) -> dict[str, Any]:
    # Everything is checked (config, output folder, checkpoint, model, data) before the
    # output folder is created or changed, so a bad input leaves an earlier run untouched.
    device = context.device
    _check_device(config.device, config.amp, device)
    apply_backend_settings(config, device)
    torch.manual_seed(config.seed)
    if config.batch_size % context.world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by {context.world_size} processes")
    state, state_path = resume_state(config.resume, config.out)
    if context.is_main:
        _check_output(config, resuming=state is not None or bool(config.resume))
    model = build_model(config).to(device)
    if config.channels_last:
        use_channels_last(model, config.dim)
    optimizer, scheduler = adam_warmup_cosine(
        model.parameters(), config.lr, config.weight_decay, config.steps, config.warmup_steps
    )
    parts = Parts(model, optimizer, scheduler, grad_scaler(config.amp, device))
    resumed = _resume(config.resume, state, state_path, parts)
    train_set, heldout, data_metadata = build_datasets(config, context)
    check_memory(config, model, context)
    metadata = run_metadata(config, data_metadata, model)
    out = _prepare_output(config, resumed=state is not None, context=context)
    if context.is_main:
        save_yaml(config, out / "config.yaml")
        if state is not None:
            log.info("resuming from %s at step %d", state_path, resumed.step)
        elif config.resume:
            log.info("no usable checkpoint in %s; starting at step 0", out / "checkpoints")
        _announce(config, model, data_metadata, context)
    if config.compile:
        parts.network = torch.compile(model)
    task = PretrainTask(config, model, ViewGenerator(config.views, config.size), context)
    header = {"config": to_dict(config), "metadata": metadata}
    engine = Engine(task, parts, LoopOptions.of(config), context, out, header, resumed)
    result = engine.run(_loader(config, train_set, resumed.step, context))
    summary = _summary(config, model, task, result, resumed.step, out, context)
    if context.is_main:
        _finish(config, model, heldout, task.generator, device, out, summary)
    return summary


def _resume(resume: str | None, state: dict[str, Any] | None, state_path: Path | None, parts: Parts) -> Resumed:
    """Load a resumed checkpoint's states into ``parts`` (``resume``: the option); where the run starts."""
    if state is None:
        if resume and resume != "auto":
            raise ConfigError(f"resume: {resume} could not be used")
        return Resumed()
    load_states(state_path, parts.states(state))
    return Resumed(
        step=int(state["step"]),
        skipped=int(state.get("nonfinite_steps", 0)),
        seconds=float(state.get("seconds", 0.0)),
        rng=state.get("rng"),
    )


def _parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """Parameters of the backbone and of the method's head."""
    backbone = sum(p.numel() for p in model.backbone.parameters())
    return backbone, sum(p.numel() for p in model.parameters()) - backbone


def _announce(
    config: PretrainConfig, model: torch.nn.Module, data_metadata: dict[str, Any], context: DistributedContext
) -> None:
    """The run's first lines: method, sizes, learning rate and its origin, parameters, data notes."""
    backbone_params, head_params = _parameter_counts(model)
    recipe = f" recipe={model.recipe}" if hasattr(model, "recipe") else ""
    lr_origin, lr_warning = lr_notes(config.lr, config.batch_size, getattr(model, "recipe", None))
    if lr_warning:
        log.warning(lr_warning.removeprefix("warning: "))
    log.info(
        f"cover pretrain: method={config.method}{recipe} dim={config.dim} size={list(config.size)} "
        f"batch={config.batch_size} steps={config.steps} lr={config.lr:g} ({lr_origin}) device={context.device} "
        f"processes={context.world_size}\n"
        f"model: {config.model.backbone} backbone {backbone_params:,} parameters, "
        f"head {head_params:,} parameters"
    )
    for key in ("preset_note", "spacing_note"):
        if data_metadata.get(key):
            log.info("data: %s", data_metadata[key])


def _loader(config: PretrainConfig, train_set: Dataset, start: int, context: DistributedContext) -> DataLoader:
    """This process's batches of steps ``start`` to ``steps - 1`` (a function of ``(seed, step)``)."""
    sampler = StepBatchSampler(
        config.seed, config.batch_size, len(train_set), start, config.steps, context.rank, context.world_size
    )
    return DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=_worker_init if config.num_workers > 0 else None,
        generator=torch.Generator().manual_seed(config.seed),  # leaves the global torch RNG alone
    )


def _summary(
    config: PretrainConfig,
    model: torch.nn.Module,
    task: PretrainTask,
    result: LoopResult,
    start: int,
    out: Path,
    context: DistributedContext,
) -> dict[str, Any]:
    """The run summary: sizes, steps, time, weights digests, final losses and the collapse verdict."""
    backbone_params, head_params = _parameter_counts(model)
    checkpoints = list_checkpoints(out) if context.is_main else []
    summary = {
        "steps": config.steps,
        "start_step": start,
        "method": config.method,
        **({"recipe": model.recipe} if hasattr(model, "recipe") else {}),
        "dim": config.dim,
        "size": list(config.size),
        "backbone_parameters": backbone_params,
        "head_parameters": head_params,
        "nonfinite_steps": result.skipped,
        "seconds": round(result.seconds, 1),
        "checkpoint": str(checkpoints[-1]) if checkpoints else None,
        "processes": context.world_size,
        # SHA-256 of each rank's final weights: DDP replicas must be identical.
        "parameter_digests": result.digests,
    }
    tail = max(1, min(20, len(task.history.get("loss", [])) // 5 or 1))
    for key, values in task.history.items():
        summary[f"final_{key}"] = float(np.mean(values[-tail:])) if values else math.nan
    if task.collapse:
        collapse = task.collapse
        stats = {"pair_cos": collapse["feat_pair_cos"], "eff_rank": collapse["feat_eff_rank"]}
        summary.update({f"final_{k}": v for k, v in collapse.items()})
        summary["features_collapsed"] = is_collapsed(stats)
        if summary["features_collapsed"]:
            log.warning(
                f"the finest features collapsed onto one direction at step {result.done} ({describe(stats)}); "
                "fine-tuning from them may do worse than from scratch"
            )
    return summary


def _epe_source(config: PretrainConfig) -> str:
    """Which view pairs the final endpoint error is measured on, in words.

    With the user's data the pairs are new views of the training images (no image is held out:
    a small folder has none to spare), and the text says so; the demo holds out a slab.
    """
    if not config.is_demo:
        source = "the training images (no image held out)"
    elif config.dim == 2:
        source = "the demo's held-out slab (never trained on)"
    else:
        source = "patches centred in the demo's test slab (3D patches of the one template overlap the training region)"
    return f"{config.eval_pairs} view pairs of {source} with transforms never drawn in training"


def _finish(
    config: PretrainConfig,
    model: torch.nn.Module,
    heldout: Dataset,
    generator: ViewGenerator,
    device: torch.device,
    out: Path,
    summary: dict[str, Any],
) -> None:
    """Held-out endpoint error, pictures and ``summary.json``."""
    from cover.engine.curves import plot_losses
    from cover.pretraining.figures import plot_flow

    if hasattr(model, "predict_field"):
        with summary_if_interrupted(summary, out / "summary.json", "the endpoint error"):
            result = evaluate_fields(model, heldout, generator, config.eval_pairs, config.seed, device)
        summary["epe"] = result["epe"]
        summary["epe_zero"] = result["epe_zero"]
        summary["epe_ratio"] = result["epe"] / max(result["epe_zero"], 1e-9)
        summary["epe_pairs"] = _epe_source(config)
        views, phi = result["views"], result["phi"]
        plot_flow(views.view_a, views.view_b, views.phi_gt, phi, warp(views.view_a, phi), views.mask, out / "flow.png")
    columns = tuple(k for k in model.logged if k != "loss") or ("loss",)
    plot_losses(out / "log.csv", out / "loss.png", columns=columns + COLLAPSE_COLUMNS)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if "epe" in summary:
        log.info(
            f"endpoint error {summary['epe']:.3f} px (zero field {summary['epe_zero']:.3f} px, "
            f"ratio {summary['epe_ratio']:.2f}) on {summary['epe_pairs']}; results in {out}"
        )
    else:
        log.info("done; results in %s", out)
