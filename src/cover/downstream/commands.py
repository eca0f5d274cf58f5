"""``cover finetune``, ``cover evaluate`` and ``cover predict``: thin typer commands over the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def register(app: typer.Typer) -> None:
    """Add the downstream commands to the ``cover`` app."""
    app.command()(finetune)
    app.command()(evaluate)
    app.command()(predict)


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
    dim: Annotated[int | None, Opt(help="2 or 3.")] = None,
    num_classes: Annotated[int | None, Opt(help="Classes incl. background (default: from the labels).")] = None,
    label_fraction: Annotated[float | None, Opt(help="Fraction of the training cases that are labeled.")] = None,
    num_labeled: Annotated[int | None, Opt(help="Number of labeled training cases.")] = None,
    val_fraction: Annotated[float | None, Opt(help="Fraction of the cases held out for validation.")] = None,
    epochs: Annotated[int | None, Opt(help="Passes over the labeled cases.")] = None,
    steps: Annotated[int | None, Opt(help="Optimiser steps (wins over --epochs).")] = None,
    freeze: Annotated[str | None, Opt(help="none, encoder, or all (linear probe).")] = None,
    freeze_steps: Annotated[
        int | None, Opt(help="First steps training only the new head on a fixed pretrained backbone (LP-FT).")
    ] = None,
    backbone_lr_scale: Annotated[float | None, Opt(help="Pretrained backbone's lr relative to --lr.")] = None,
    batch_size: Annotated[int | None, Opt(help="Batch size.")] = None,
    lr: Annotated[float | None, Opt(help="Learning rate.")] = None,
    amp: Annotated[str | None, Opt(help="Mixed precision of training: none, bf16 or fp16 (CUDA).")] = None,
    channels_last: Annotated[
        bool | None, Opt("--channels-last/--no-channels-last", help="Channels-last layout (often faster).")
    ] = None,
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
    from cover.cli import config_values, intensity_option, show_config
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
        "label_fraction": label_fraction,
        "num_labeled": num_labeled,
        "val_fraction": val_fraction,
        "epochs": epochs,
        "steps": steps,
        "freeze": freeze,
        "freeze_steps": freeze_steps,
        "backbone_lr_scale": backbone_lr_scale,
        "batch_size": batch_size,
        "lr": lr,
        "amp": amp,
        "channels_last": channels_last,
        "size": size,
        "preset": intensity_option(intensity, preset),
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
        from cover.downstream.config import FinetuneConfig, resolve_finetune_config

        show_config(resolve_finetune_config(run_values(config_values(config, options), {}, FinetuneConfig.out)))
        return
    if devices and devices > 1:
        import sys

        from cover.engine.launch import launch_local

        raise typer.Exit(launch_local(devices, sys.argv[1:]))
    run(config_values(config, options))


CheckpointArg = Annotated[
    str | None, typer.Argument(metavar="CHECKPOINT", help="Older form of --checkpoint.", show_default=False)
]
FinetunedOpt = Annotated[str | None, Opt("--checkpoint", help="A cover finetune output folder (or its best.pt).")]


def evaluate(
    checkpoint_arg: CheckpointArg = None,
    checkpoint: FinetunedOpt = None,
    images: Annotated[str | None, Opt(help="Image folder (omit for a demo checkpoint: the demo test slab).")] = None,
    labels: Annotated[str | None, Opt(help="seg: label-map folder; cls: CSV with image,label.")] = None,
    datalist: Annotated[str | None, Opt(help="JSON/CSV datalist with image and label.")] = None,
    out: Annotated[str, Opt(help="Output folder.")] = "cover_runs/evaluate",
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    overlap: Annotated[float | None, Opt(help="Sliding-window overlap.")] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Write into a non-empty --out.")] = False,
) -> None:
    """Score a fine-tuned checkpoint: per-case, per-class Dice and HD95 (seg) or AUC/accuracy (cls)."""
    from cover.downstream.evaluate import evaluate as run
    from cover.models.loading import given_checkpoint

    summary = run(
        given_checkpoint(checkpoint, checkpoint_arg),
        images,
        labels,
        datalist,
        out,
        device=device,
        overwrite=overwrite,
        overlap=overlap,
    )
    if summary["task"] == "seg":
        per_class = ", ".join(f"{name} {v['dice_mean']:.3f}" for name, v in summary["classes"].items())
        print(f"{summary['num_cases']} cases: mean Dice {summary['mean_dice']:.3f} ({per_class}); results in {out}")
    else:
        auc = "n/a" if summary["auc"] is None else f"{summary['auc']:.3f}"
        print(f"{summary['num_cases']} cases: AUC {auc}, accuracy {summary['accuracy']:.3f}; results in {out}")


def predict(
    checkpoint_arg: CheckpointArg = None,
    checkpoint: FinetunedOpt = None,
    images: Annotated[str | None, Opt(help="Image folder, file or datalist.")] = None,
    out: Annotated[str, Opt(help="Output folder.")] = "cover_runs/predict",
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    overlap: Annotated[float | None, Opt(help="Sliding-window overlap.")] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="Write into a non-empty --out.")] = False,
    on_bad_file: Annotated[
        str, Opt(help="skip (warn, list in summary.json, go on) or error (stop at the first bad file).")
    ] = "skip",
) -> None:
    """Write masks (on each input's own grid and format) or class predictions for new images.

    The checkpoint sets the dimension (2D/3D), channels and intensity preset.
    """
    from cover.downstream.predict import predict as run
    from cover.errors import ConfigError
    from cover.models.loading import given_checkpoint

    checkpoint = given_checkpoint(checkpoint, checkpoint_arg)
    if images is None:
        raise ConfigError("images: required (--images FOLDER, file or datalist)")
    summary = run(checkpoint, images, out, device=device, overwrite=overwrite, overlap=overlap, on_bad_file=on_bad_file)
    skipped = f", {len(summary['skipped'])} skipped (listed in summary.json)" if summary["skipped"] else ""
    print(f"{summary['num_predicted']} of {summary['num_images']} images predicted{skipped}; results in {out}")
