"""``cover pretrain``: a thin typer command over :func:`cover.pretrain`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cover.cli.options import (
    ConfigOpt,
    DeviceOpt,
    DryRunOpt,
    IntensityOpt,
    OutOpt,
    PresetAliasOpt,
    SeedOpt,
    config_values,
    intensity_option,
    show_config,
)


def add_commands(app: typer.Typer) -> None:
    """Add ``cover pretrain`` to the ``cover`` app."""
    app.command()(pretrain)


def pretrain(
    data: Annotated[
        str | None,
        typer.Option(help="Folder or datalist of unlabeled images; omit for the built-in MNI152 demo."),
    ] = None,
    dim: Annotated[int | None, typer.Option(help="2 or 3.")] = None,
    size: Annotated[str | None, typer.Option(help="Crop/patch size: 64 or 64,64 (multiples of 16).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3 x sqrt(batch/4)).")] = None,
    window_radius: Annotated[int | None, typer.Option(help="MoV window radius r (window 2r+1 per axis).")] = None,
    channels: Annotated[
        str | None, typer.Option(help="U-Net widths, encoder then decoder, e.g. 16,32,64,128,64,32,16.")
    ] = None,
    heads: Annotated[str | None, typer.Option(help="MoV heads per level, coarse to fine, e.g. 4,4,4,1,1.")] = None,
    head_dim: Annotated[int | None, typer.Option(help="Channels per MoV head.")] = None,
    mov_schedule: Annotated[
        str | None,
        typer.Option(help="MoV schedule: auto (fused on CUDA, chunked on CPU), fused or chunked (same result)."),
    ] = None,
    vec_weight: Annotated[float | None, typer.Option(help="Weight of the COVER vector (registration) loss.")] = None,
    con_weight: Annotated[float | None, typer.Option(help="Weight of the COVER consistency loss.")] = None,
    method: Annotated[str | None, typer.Option(help="Pretraining method (cover, ...).")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="COVER loss recipe (paper, centred, vicreg, ...; docs/method.md).")
    ] = None,
    views: Annotated[
        str | None, typer.Option(help="View generator style: cover or authors (the release's; docs/method.md §3).")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone (unet, monai-basicunet, nnunet).")] = None,
    plans: Annotated[str | None, typer.Option(help="--backbone nnunet: nnU-Net plans file (nnUNetPlans.json).")] = None,
    configuration: Annotated[
        str | None, typer.Option(help="--backbone nnunet: plans configuration (default 2d / 3d_fullres by --dim).")
    ] = None,
    amp: Annotated[str | None, typer.Option(help="auto (per device), none, bf16 or fp16.")] = None,
    device: DeviceOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = None,
    intensity: IntensityOpt = None,
    preset: PresetAliasOpt = None,
    spacing: Annotated[str | None, typer.Option(help="Resample volumes to this spacing in mm, e.g. 1.5,1.5,2.")] = None,
    in_channels: Annotated[
        int | None, typer.Option(help="Image channels; >1 reads colour/vector samples as channels (never mixed).")
    ] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers (default per device).")] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Decoded-image cache shared by runs: auto (~/.cache/cover/arrays), a folder, or none."),
    ] = None,
    cache_memory_mb: Annotated[
        float | None, typer.Option(help="Most MB of image arrays held per process (default 4096).")
    ] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option(help="Also checkpoint every this many minutes.")] = None,
    resume: Annotated[str | None, typer.Option(help="auto (newest valid checkpoint in --out) or a checkpoint.")] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help="Write into a non-empty --out.")] = None,
    compile: Annotated[bool | None, typer.Option("--compile", help="Use torch.compile.")] = None,
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last", help="Channels-last layout (often faster).")
    ] = None,
    cudnn_benchmark: Annotated[
        bool | None, typer.Option("--cudnn-benchmark/--no-cudnn-benchmark", help="cuDNN autotuning (default on CUDA).")
    ] = None,
    tf32: Annotated[bool | None, typer.Option("--tf32/--no-tf32", help="TF32 matmuls (default on CUDA).")] = None,
    on_bad_file: Annotated[str | None, typer.Option(help="skip (warn) or error.")] = None,
    devices: Annotated[int | None, typer.Option(help="Launch this many processes (DDP) on this machine.")] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Pretrain a U-Net on unlabeled images (default: a 2D demo on the MNI152 template).

    Defaults depend on --dim (and --config); --dry-run prints them all, resolved.
    """
    options = {
        "data": data,
        "dim": dim,
        "size": size,
        "batch_size": batch_size,
        "steps": steps,
        "lr": lr,
        "method": method,
        "amp": amp,
        "device": device,
        "out": out,
        "seed": seed,
        "intensity": intensity_option(intensity, preset),
        "spacing": spacing,
        "in_channels": in_channels,
        "num_workers": num_workers,
        "cache_dir": cache_dir,
        "cache_memory_mb": cache_memory_mb,
        "checkpoint_every": checkpoint_every,
        "checkpoint_minutes": checkpoint_minutes,
        "resume": resume,
        "overwrite": overwrite,
        "compile": compile,
        "channels_last": channels_last,
        "cudnn_benchmark": cudnn_benchmark,
        "tf32": tf32,
        "on_bad_file": on_bad_file,
        "vec_weight": vec_weight,
        "con_weight": con_weight,
        "model": {
            k: v
            for k, v in {
                "window_radius": window_radius,
                "backbone": backbone,
                "channels": channels,
                "heads": heads,
                "head_dim": head_dim,
                "mov_schedule": mov_schedule,
            }.items()
            if v is not None
        },
        "method_options": {"recipe": recipe} if recipe is not None else {},
        "views": {"style": views} if views is not None else None,
    }
    nnunet_args = {k: v for k, v in {"plans": plans, "configuration": configuration}.items() if v is not None}
    if nnunet_args:
        options["model"]["backbone_args"] = nnunet_args
    if dry_run:
        from cover.config import default_pretrain_out, resolve_pretrain_config, run_values

        values = run_values(config_values(config, options), {}, lambda v: default_pretrain_out(v.get("dim", 2)))
        show_config(resolve_pretrain_config(values))
        return
    if devices and devices > 1:
        from cover.engine.launch import launch_local

        raise typer.Exit(launch_local(devices, sys.argv[1:]))
    from cover.pretraining.pretrain import pretrain as run_pretrain

    run_pretrain(config_values(config, options))
