"""``cover evaluate``: a thin typer command over :func:`cover.evaluate`."""

from __future__ import annotations

from typing import Annotated

import typer

from cover.cli.options import CheckpointArg, FinetunedOpt, Opt


def add_commands(app: typer.Typer) -> None:
    """Add ``cover evaluate`` to the ``cover`` app."""
    app.command()(evaluate)


def evaluate(
    checkpoint_arg: CheckpointArg = None,
    checkpoint: FinetunedOpt = None,
    images: Annotated[str | None, Opt(help="Image folder (omit for a demo checkpoint: the demo test slab).")] = None,
    labels: Annotated[str | None, Opt(help="seg: label-map folder; cls: CSV with image,label.")] = None,
    datalist: Annotated[str | None, Opt(help="JSON/CSV datalist with image and label.")] = None,
    label_values: Annotated[
        str | None,
        Opt(
            help="Values these label maps hold, background first: value i of the list is class i, e.g. 0,255 "
            "(default: the checkpoint's --label-values, else the class indices 0..K-1)."
        ),
    ] = None,
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
        label_values=label_values,
    )
    if summary["task"] == "seg":
        per_class = ", ".join(f"{name} {v['dice_mean']:.3f}" for name, v in summary["classes"].items())
        print(f"{summary['num_cases']} cases: mean Dice {summary['mean_dice']:.3f} ({per_class}); results in {out}")
    else:
        auc = "n/a" if summary["auc"] is None else f"{summary['auc']:.3f}"
        print(f"{summary['num_cases']} cases: AUC {auc}, accuracy {summary['accuracy']:.3f}; results in {out}")
