"""``cover predict``: a thin typer command over :func:`cover.predict`."""

from __future__ import annotations

from typing import Annotated

import typer

from cover.cli.options import CheckpointArg, FinetunedOpt, Opt


def add_commands(app: typer.Typer) -> None:
    """Add ``cover predict`` to the ``cover`` app."""
    app.command()(predict)


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
