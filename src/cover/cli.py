"""The ``cover`` console script: a thin layer over the Python API with the same option names.

Every user-fixable problem surfaces as a :class:`cover.errors.CoverError`, printed as one
line (``error: ...``) with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from cover.config import deep_merge
from cover.errors import CoverError, TrainingInterrupted

log = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning (COVER).",
)
data_app = typer.Typer(no_args_is_help=True, help="Look at medical image data.")
app.add_typer(data_app, name="data")


@app.callback()
def global_options(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Warnings and errors only, no progress bar (before the command).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also debug lines, with seconds and module (before the command).")
    ] = False,
) -> None:
    """Messages on stderr: progress notes by default, fewer with --quiet, debug lines with --verbose."""
    from cover.runtime import configure_logging

    if quiet and verbose:
        raise CoverError("--quiet and --verbose exclude each other; give one")
    configure_logging(-1 if quiet else 1 if verbose else 0)
    if verbose:
        import platform

        import torch

        from cover import __version__

        log.debug(
            "cover %s, torch %s, Python %s; %s", __version__, torch.__version__, platform.python_version(), sys.argv
        )


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


IntensityOpt = Annotated[
    str | None,
    typer.Option(help="Intensity preset: ct, ct:-175,250, mri, xray, zscore, ... (default: per file)."),
]
PresetAliasOpt = Annotated[str | None, typer.Option(hidden=True, help="Deprecated alias of --intensity.")]


def show_config(config: Any) -> None:
    """Print a resolved config dataclass as YAML (``--dry-run``): nothing is trained, read or written."""
    import yaml

    from cover.config import to_dict

    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")


DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the resolved configuration as YAML; train and write nothing."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with any of these options.")]
OutOpt = Annotated[str | None, typer.Option(help="Output folder.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed.")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")]


@app.command()
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
    vec_weight: Annotated[float | None, typer.Option(help="Weight of the COVER vector (registration) loss.")] = None,
    con_weight: Annotated[float | None, typer.Option(help="Weight of the COVER consistency loss.")] = None,
    method: Annotated[str | None, typer.Option(help="Pretraining method (cover, ...).")] = None,
    recipe: Annotated[
        str | None, typer.Option(help="COVER loss recipe (paper, centred, vicreg, ...; docs/method.md).")
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="Backbone (unet, monai-basicunet, nnunet).")] = None,
    plans: Annotated[str | None, typer.Option(help="--backbone nnunet: nnU-Net plans file (nnUNetPlans.json).")] = None,
    configuration: Annotated[
        str | None, typer.Option(help="--backbone nnunet: plans configuration (default 2d / 3d_fullres by --dim).")
    ] = None,
    amp: Annotated[str | None, typer.Option(help="none, bf16 or fp16.")] = None,
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
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option(help="Also checkpoint every this many minutes.")] = None,
    resume: Annotated[str | None, typer.Option(help="auto (newest valid checkpoint in --out) or a checkpoint.")] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help="Write into a non-empty --out.")] = None,
    compile: Annotated[bool | None, typer.Option("--compile", help="Use torch.compile.")] = None,
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last", help="Channels-last layout (often faster).")
    ] = None,
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
        "preset": intensity_option(intensity, preset),
        "spacing": spacing,
        "in_channels": in_channels,
        "num_workers": num_workers,
        "checkpoint_every": checkpoint_every,
        "checkpoint_minutes": checkpoint_minutes,
        "resume": resume,
        "overwrite": overwrite,
        "compile": compile,
        "channels_last": channels_last,
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
            }.items()
            if v is not None
        },
        "method_options": {"recipe": recipe} if recipe is not None else {},
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
    from cover.train.pretrain import pretrain as run_pretrain

    run_pretrain(config_values(config, options))


@data_app.command("inspect")
def data_inspect(path: Annotated[str, typer.Argument(help="A file, folder or datalist.")]) -> None:
    """List what a folder holds: formats, shapes, spacings, intensities, unreadable files."""
    from cover.data.inspect import run_inspect

    print(run_inspect(path))


# Sub-command modules; each exposes ``register(app)``. A module not (yet) present is skipped.
COMMAND_MODULES = (
    "cover.downstream.commands",
    "cover.downstream.register_commands",
    "cover.models.export",
    "cover.analysis.commands",
    "cover.benchmark.commands",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name and name.startswith(error.name):
                continue
            raise
        module.register(app)


_register_commands()


#: Warnings known to be harmless, silenced by message (a regular expression matched at the start)
#: and category; every other warning is shown, as one ``warning: ...`` line.
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch.from_numpy on a read-only array (memory-mapped or cached images): cover never writes
    # into such tensors in place.
    ("The given NumPy array is not writable", UserWarning),
)


def install_warning_filters() -> None:
    """Silence :data:`HARMLESS_WARNINGS` and print every other warning as one line."""
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, *_: Any, **__: Any) -> str:
    """Warnings as one line (``warning: ...``), without the file name and source line."""
    return "warning: " + " ".join(str(message).split()) + "\n"


def main() -> None:
    """Entry point of the ``cover`` console script.

    Exit status: 0 success, 2 bad input or usage (one ``error: ...`` line, no traceback),
    130 interrupted (after a checkpoint, with the command that resumes).
    """
    from cover.runtime import reset_logging

    install_warning_filters()
    try:
        code = app(standalone_mode=False)
    except CoverError as error:
        # One write per line: the processes of a --devices launch share the same stderr.
        if isinstance(error, TrainingInterrupted):
            sys.stderr.write(f"{error}\n")
            sys.exit(130)
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    except typer.TyperException as error:  # usage errors: unknown option, value of the wrong type
        message = error.format_message()
        context = getattr(error, "ctx", None)
        if not message.strip():  # a group called without a command: its help is already shown
            pass
        elif "\n" in message.strip():
            print(message, file=sys.stderr)
        else:
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        code = 130
    finally:
        reset_logging()  # a main() called in-process (tests, notebooks) leaves logging as it found it
    if code == 130:
        print("interrupted", file=sys.stderr)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)
