"""``cover finetune``: a thin typer command over :func:`cover.finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cover.cli.options import Opt, config_values, intensity_option, show_config

#: ``--label-values`` (label maps must otherwise hold the class indices 0..K-1).
LABEL_VALUES_HELP = (
    "Values the label maps hold, background first: value i of the list is class i, e.g. 0,255 for "
    "binary masks saved as 0/255; predicted masks are written back in these values "
    "(default: the labels are the class indices 0..K-1)."
)


def add_commands(app: typer.Typer) -> None:
    """Add ``cover finetune`` to the ``cover`` app."""
    app.command()(finetune)


def finetune(
    pretrained: Annotated[
        str | None,
        Opt(
            "--checkpoint",
            "--pretrained",
            help="cover pretrain run folder, checkpoint or export to start from; omit to train from scratch.",
        ),
    ] = None,
    task: Annotated[str | None, Opt(help="seg or cls.")] = None,
    images: Annotated[str | None, Opt(help="Image folder; omit (with --task seg) for the MNI152 tissue demo.")] = None,
    labels: Annotated[str | None, Opt(help="seg: label-map folder (same stems); cls: CSV with image,label.")] = None,
    datalist: Annotated[str | None, Opt(help="JSON/CSV datalist with image and label.")] = None,
    val_images: Annotated[str | None, Opt(help="Explicit validation images (else --val-fraction).")] = None,
    val_labels: Annotated[str | None, Opt(help="Labels of --val-images.")] = None,
    val_datalist: Annotated[str | None, Opt(help="Explicit validation datalist.")] = None,
    dim: Annotated[int | None, Opt(help="2 or 3 (default: the pretrained checkpoint's, else 2).")] = None,
    num_classes: Annotated[int | None, Opt(help="Classes incl. background (default: from the labels).")] = None,
    label_values: Annotated[str | None, Opt(help=LABEL_VALUES_HELP)] = None,
    label_fraction: Annotated[float | None, Opt(help="Fraction of the training cases that are labeled.")] = None,
    num_labeled: Annotated[int | None, Opt(help="Number of labeled training cases.")] = None,
    val_fraction: Annotated[float | None, Opt(help="Fraction of the cases held out for validation.")] = None,
    epochs: Annotated[int | None, Opt(help="Passes over the labeled cases.")] = None,
    steps: Annotated[int | None, Opt(help="Optimiser steps (wins over --epochs).")] = None,
    freeze: Annotated[str | None, Opt(help="none, encoder, or all (linear probe).")] = None,
    transfer: Annotated[str | None, Opt(help="Pretrained part to start from: all, or encoder (fresh decoder).")] = None,
    freeze_steps: Annotated[
        int | None, Opt(help="First steps training only the new head on a fixed pretrained backbone (LP-FT).")
    ] = None,
    backbone_lr_scale: Annotated[float | None, Opt(help="Pretrained backbone's lr relative to --lr.")] = None,
    batch_size: Annotated[int | None, Opt(help="Batch size.")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate.")] = None,
    lr_schedule: Annotated[
        str | None, Opt(help="After warm-up: cosine (decay to 0 at --steps) or constant (--steps only a cap).")
    ] = None,
    amp: Annotated[str | None, Opt(help="Mixed precision of training: none, bf16 or fp16 (CUDA).")] = None,
    channels_last: Annotated[
        bool | None, Opt("--channels-last/--no-channels-last", help="Channels-last layout (often faster).")
    ] = None,
    compile: Annotated[bool | None, Opt("--compile", help="Use torch.compile for the training steps.")] = None,
    size: Annotated[str | None, Opt(help="Training crop / input size: 96 or 96,96 (multiple of 16).")] = None,
    intensity: Annotated[str | None, Opt(help="Intensity preset (default: the pretrained checkpoint's).")] = None,
    preset: Annotated[str | None, Opt(hidden=True, help="Deprecated alias of --intensity.")] = None,
    in_channels: Annotated[
        int | None, Opt(help="Image channels; >1 reads colour/vector samples as channels (never mixed).")
    ] = None,
    val_every: Annotated[int | None, Opt(help="Steps between validations.")] = None,
    patience: Annotated[int | None, Opt(help="Early stop after this many validations without improvement.")] = None,
    select: Annotated[str | None, Opt(help="Reported checkpoint: best or last.")] = None,
    channels: Annotated[str | None, Opt(help="U-Net widths when training from scratch, e.g. 8,16,32,16,8.")] = None,
    seed: Annotated[int | None, Opt(help="Seed of the split, sampling and initialisation.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or cuda:N.")] = None,
    out: Annotated[str | None, Opt(help="Output folder.")] = None,
    config: Annotated[Path | None, Opt("--config", help="YAML file with any of these options.")] = None,
    overwrite: Annotated[bool | None, Opt("--overwrite", help="Write into a non-empty --out.")] = None,
    resume: Annotated[str | None, Opt(help="auto (newest valid checkpoint in --out) or a checkpoint.")] = None,
    checkpoint_every: Annotated[int | None, Opt(help="Steps between training-state checkpoints.")] = None,
    checkpoint_minutes: Annotated[float | None, Opt(help="Also checkpoint every this many minutes.")] = None,
    devices: Annotated[int | None, Opt(help="Launch this many processes (DDP) on this machine.")] = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="Print the resolved configuration as YAML; train and write nothing.")
    ] = False,
) -> None:
    """Fine-tune a pretrained backbone (or train from scratch) on labeled images."""
    from cover.downstream.finetune import finetune as run

    options = {
        "pretrained": pretrained,
        "task": task,
        "images": images,
        "labels": labels,
        "datalist": datalist,
        "val_images": val_images,
        "val_labels": val_labels,
        "val_datalist": val_datalist,
        "dim": dim,
        "num_classes": num_classes,
        "label_values": label_values,
        "label_fraction": label_fraction,
        "num_labeled": num_labeled,
        "val_fraction": val_fraction,
        "epochs": epochs,
        "steps": steps,
        "freeze": freeze,
        "transfer": transfer,
        "freeze_steps": freeze_steps,
        "backbone_lr_scale": backbone_lr_scale,
        "batch_size": batch_size,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "size": size,
        "intensity": intensity_option(intensity, preset),
        "in_channels": in_channels,
        "val_every": val_every,
        "patience": patience,
        "select": select,
        "seed": seed,
        "device": device,
        "out": out,
        "overwrite": overwrite,
        "resume": resume,
        "checkpoint_every": checkpoint_every,
        "checkpoint_minutes": checkpoint_minutes,
        "model": {"channels": channels} if channels else {},
    }
    if dry_run:
        from cover.config import run_values
        from cover.downstream.config import FinetuneConfig, dim_of_checkpoint, resolve_finetune_config

        values = run_values(config_values(config, options), {}, FinetuneConfig.out)
        show_config(resolve_finetune_config(dim_of_checkpoint(values)))
        return
    if devices and devices > 1:
        import sys

        from cover.engine.launch import launch_local

        raise typer.Exit(launch_local(devices, sys.argv[1:]))
    run(config_values(config, options))
