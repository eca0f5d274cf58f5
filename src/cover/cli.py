"""The ``cover`` console script (placeholder, filled by the pretraining engine)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="cover command line.")


def main() -> None:
    """Entry point of the ``cover`` console script."""
    app()
