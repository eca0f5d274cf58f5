"""The ``cover`` console script: the typer app, its global options, warnings and ``main`` (exit statuses).

Each sub-command lives in its own module of :mod:`cover.cli`, a thin layer over the Python API
with the same option names.

Every user-fixable problem surfaces as a :class:`cover.errors.CoverError`, printed as one
line (``error: ...``) with a non-zero exit status and no traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Annotated, Any

import typer

from cover.errors import CoverError, TrainingInterrupted, path_error

log = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning (COVER).",
)


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


def _add_commands() -> None:
    """Add every sub-command, in the order ``cover --help`` lists them."""
    from cover.cli import analyze, benchmark, data, evaluate, export, finetune, predict, pretrain, registration

    data.add_commands(app)
    for module in (pretrain, finetune, evaluate, predict, registration, export, analyze, benchmark):
        module.add_commands(app)


_add_commands()


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


def _run_app() -> Any:
    """The typer app; a path the file system refuses (an ``--out`` below a file, read-only) becomes a CoverError."""
    try:
        return app(standalone_mode=False)
    except OSError as error:
        mapped = path_error(error)
        if mapped is None:
            raise
        raise mapped from None


def main() -> None:
    """Entry point of the ``cover`` console script.

    Exit status: 0 success, 2 bad input or usage (one ``error: ...`` line, no traceback),
    130 interrupted (after a checkpoint, with the command that resumes).
    """
    from cover.runtime import reset_logging

    install_warning_filters()
    try:
        code = _run_app()
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
