"""``cover data ...``: look at medical image data (``cover data inspect``)."""

from __future__ import annotations

from typing import Annotated

import typer


def add_commands(app: typer.Typer) -> None:
    """Add the ``cover data`` group (``cover data inspect``) to the ``cover`` app."""
    data_app = typer.Typer(no_args_is_help=True, help="Look at medical image data.")
    data_app.command("inspect")(data_inspect)
    app.add_typer(data_app, name="data")


def data_inspect(path: Annotated[str, typer.Argument(help="A file, folder or datalist.")]) -> None:
    """List what a folder holds: formats, shapes, spacings, intensities, unreadable files."""
    from cover.data.inspect import run_inspect

    print(run_inspect(path))
