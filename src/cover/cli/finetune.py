"""``cover finetune``: a thin typer command over :func:`cover.finetune`; its options come from the config."""

from __future__ import annotations

import sys
from typing import Any

import typer

from cover.cli.flags import command, config_flags, nested_values
from cover.cli.options import RUN_FLAGS, config_values, intensity_option, launch_devices, show_config
from cover.downstream.config import FinetuneConfig

FLAGS = [*config_flags(FinetuneConfig), *RUN_FLAGS]


def run(given: dict[str, Any]) -> None:
    """Fine-tune with the values of the command line (``None``: not given), or print them resolved (``--dry-run``)."""
    options = nested_values(FLAGS, {**given, "intensity": intensity_option(given["intensity"], given["preset"])})
    if given["dry_run"]:
        from cover.config import run_values
        from cover.downstream.config import dim_of_checkpoint, resolve_finetune_config

        values = run_values(config_values(given["config"], options), {}, FinetuneConfig.out)
        show_config(resolve_finetune_config(dim_of_checkpoint(values)))
        return
    launch_devices(given["devices"], sys.argv[1:])
    from cover.downstream.finetune import finetune as run_finetune

    run_finetune(config_values(given["config"], options))


finetune = command("finetune", "Fine-tune a pretrained backbone (or train from scratch) on labeled images.", FLAGS, run)


def add_commands(app: typer.Typer) -> None:
    """Add ``cover finetune`` to the ``cover`` app."""
    app.command()(finetune)
