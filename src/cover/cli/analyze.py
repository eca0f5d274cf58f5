"""``cover analyze``: a thin typer command over :func:`cover.analysis.analyze.analyze`."""

from __future__ import annotations

from typing import Annotated

import typer

from cover.cli.options import Opt, intensity_option


def add_commands(app: typer.Typer) -> None:
    """Add ``cover analyze`` to the ``cover`` app."""
    app.command()(analyze)


def analyze(
    checkpoint: Annotated[
        str | None,
        Opt(help="cover pretrain checkpoint or run folder (or fine-tuned/export); omit for an untrained U-Net."),
    ] = None,
    images: Annotated[str | None, Opt(help="Labeled image folder; omit for the MNI152 test-slab slices.")] = None,
    labels: Annotated[str | None, Opt(help="Label-map folder matching --images by file-name stem.")] = None,
    datalist: Annotated[str | None, Opt(help="JSON/CSV datalist with image and label.")] = None,
    out: Annotated[str, Opt(help="Output folder.")] = "cover_runs/analyze",
    intensity: Annotated[str | None, Opt(help="Intensity preset (default: the checkpoint's).")] = None,
    preset: Annotated[str | None, Opt(hidden=True, help="Deprecated alias of --intensity.")] = None,
    class_names: Annotated[str | None, Opt(help="Names of labels 0,1,... comma separated.")] = None,
    samples_per_class: Annotated[int, Opt(help="Pixels sampled per class for the class distances.")] = 500,
    max_distance: Annotated[int, Opt(help="Largest neighbour distance in pixels.")] = 8,
    include_background: Annotated[bool, Opt("--include-background", help="Also analyse label 0.")] = False,
    embedding: Annotated[str, Opt(help="pca or tsne.")] = "pca",
    max_images: Annotated[int, Opt(help="Analyse at most this many images.")] = 32,
    seed: Annotated[int, Opt(help="Seed of the pixel sampling.")] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    overwrite: Annotated[bool, Opt("--overwrite", help="Write into a non-empty --out.")] = False,
) -> None:
    """Measure feature over-dispersion: class distances and neighbour similarity of pixel features."""
    from cover.analysis.analyze import analyze as run

    run(
        checkpoint,
        images,
        labels,
        datalist,
        out,
        intensity=intensity_option(intensity, preset),
        class_names=[n.strip() for n in class_names.split(",")] if class_names else None,
        samples_per_class=samples_per_class,
        max_distance=max_distance,
        include_background=include_background,
        embedding=embedding,
        max_images=max_images,
        seed=seed,
        device=device,
        overwrite=overwrite,
    )
