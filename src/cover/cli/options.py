"""What the sub-commands share: YAML + command-line values, --intensity, --dry-run, --devices, option types."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from cover.cli.flags import Flag
from cover.config import deep_merge
from cover.errors import CoverError
from cover.options import Option

log = logging.getLogger(__name__)

Opt = typer.Option


def config_values(config_file: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """YAML values overridden by the options given on the command line (``None`` = not given)."""
    from cover.config import load_yaml

    values = load_yaml(config_file) if config_file else {}
    given = {k: v for k, v in options.items() if v is not None and v != {}}
    return deep_merge(values, given)


def intensity_option(intensity: str | None, preset: str | None) -> str | None:
    """The intensity preset of ``--intensity``, or of its deprecated alias ``--preset`` (with a one-line notice)."""
    if preset is None:
        return intensity
    if intensity is not None and intensity != preset:
        raise CoverError(f"intensity: --intensity {intensity} and --preset {preset} disagree; give --intensity only")
    log.warning("--preset is deprecated for the intensity preset; use --intensity")
    return preset


def launch_devices(devices: int | None, argv: list[str]) -> None:
    """``--devices N`` (N > 1): run the command in N processes on this machine (DDP) and exit with their status."""
    if devices and devices > 1:
        from cover.engine.launch import launch_local

        raise typer.Exit(launch_local(devices, argv))


#: Flags of the training commands that are not config keys: read by the command itself.
RUN_FLAGS = (
    Flag("preset", (), str | None, Option("Deprecated alias of --intensity.", hidden=True)),
    Flag("config", (), Path | None, Option("YAML file with any of these options.", flags=("--config",))),
    Flag("devices", (), int | None, Option("Launch this many processes (DDP) on this machine.")),
    Flag(
        "dry_run",
        (),
        bool,
        Option("Print the resolved configuration as YAML; train and write nothing.", flags=("--dry-run",)),
        default=False,
    ),
)


def show_config(config: Any) -> None:
    """Print a resolved config dataclass as YAML (``--dry-run``): nothing is trained, read or written."""
    import yaml

    from cover.config import to_dict

    device = getattr(config, "device", None)
    if device is not None:
        from cover.devices import DEVICE_KEYS, device_type

        keys = ", ".join(k for k in DEVICE_KEYS if hasattr(config, k))
        print(f"# {keys}: defaults for a {device_type(device)} device unless given")
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")


CheckpointArg = Annotated[
    str | None, typer.Argument(metavar="CHECKPOINT", help="Older form of --checkpoint.", show_default=False)
]
FinetunedOpt = Annotated[str | None, Opt("--checkpoint", help="A cover finetune output folder (or its best.pt).")]
