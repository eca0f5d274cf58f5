"""``cover pretrain``: a thin typer command over :func:`cover.pretrain`; its options come from the config."""

from __future__ import annotations

import sys
from typing import Any

import typer

from cover.cli.flags import Flag, command, config_flags, nested_values
from cover.cli.options import RUN_FLAGS, config_values, intensity_option, launch_devices, show_config
from cover.config import PretrainConfig
from cover.options import Option

#: Flags of ``cover pretrain`` that set a key inside a section (``--recipe`` is ``method_options.recipe``).
SECTION_FLAGS = (
    Flag(
        "recipe",
        ("method_options", "recipe"),
        str | None,
        Option("COVER loss recipe (paper, centred, vicreg, ...; docs/method.md)."),
    ),
    Flag(
        "views",
        ("views", "style"),
        str | None,
        Option("View generator style: cover or authors (the release's; docs/method.md §3)."),
    ),
    Flag(
        "plans",
        ("model", "backbone_args", "plans"),
        str | None,
        Option("--backbone nnunet: nnU-Net plans file (nnUNetPlans.json)."),
    ),
    Flag(
        "configuration",
        ("model", "backbone_args", "configuration"),
        str | None,
        Option("--backbone nnunet: plans configuration (default 2d / 3d_fullres by --dim)."),
    ),
)

FLAGS = [*config_flags(PretrainConfig), *SECTION_FLAGS, *RUN_FLAGS]


def run(given: dict[str, Any]) -> None:
    """Pretrain with the values of the command line (``None``: not given), or print them resolved (``--dry-run``)."""
    options = nested_values(FLAGS, {**given, "intensity": intensity_option(given["intensity"], given["preset"])})
    if given["dry_run"]:
        from cover.config import default_pretrain_out, resolve_pretrain_config, run_values

        values = run_values(
            config_values(given["config"], options), {}, lambda v: default_pretrain_out(v.get("dim", 2))
        )
        show_config(resolve_pretrain_config(values))
        return
    launch_devices(given["devices"], sys.argv[1:])
    from cover.pretraining.pretrain import pretrain as run_pretrain

    run_pretrain(config_values(given["config"], options))


pretrain = command(
    "pretrain",
    """Pretrain a U-Net on unlabeled images (default: a 2D demo on the MNI152 template).

    Defaults depend on --dim (and --config); --dry-run prints them all, resolved.
    """,
    FLAGS,
    run,
)


def add_commands(app: typer.Typer) -> None:
    """Add ``cover pretrain`` to the ``cover`` app."""
    app.command()(pretrain)
