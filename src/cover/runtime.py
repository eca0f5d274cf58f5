"""Run-time services every other room may use: messages (logging), progress bars, strict JSON.

Every module logs through ``logging.getLogger(__name__)``, i.e. in the ``cover`` logger
hierarchy, and configures nothing: a program that calls the Python API decides what it sees
(Python's default shows warnings and hides progress notes). The ``cover`` script, or a program
that wants the script's output, calls :func:`configure_logging` once:

- ``verbosity=0``: progress notes (INFO) as plain lines, warnings as ``warning: ...``, errors as
  ``error: ...``, all on stderr, and progress bars;
- ``verbosity=-1`` (``cover --quiet``): warnings and errors only, no progress bar;
- ``verbosity=1`` (``cover --verbose``): also DEBUG lines, each line led by the seconds since
  start and the module that wrote it.

Python warnings (``warnings.warn``) are left to Python's ``warnings`` machinery (the script
formats them as one ``warning: ...`` line, see ``cover.cli.console``): routing them into logging
(``logging.captureWarnings``) would replace ``warnings.showwarning`` and so hide them from
``warnings.catch_warnings(record=True)`` and ``pytest.warns`` in a program that runs the script's
``main()`` in-process. Results a command is asked for (``--dry-run``'s YAML,
``cover data inspect``'s table, the ``evaluate``/``predict``/``export`` result lines) are printed
on stdout by the command itself, not logged.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from tqdm.auto import tqdm

#: The logger above every ``cover`` module's logger.
ROOT = "cover"

#: Logger levels of ``--quiet`` (-1), the default (0) and ``--verbose`` (1).
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _Formatter(logging.Formatter):
    """One message per line, prefixed like the script's other lines; ``verbose`` adds seconds and module."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            text = f"error: {message}"
        elif record.levelno >= logging.WARNING:
            text = f"warning: {message}"
        else:
            text = message
        if self.verbose:
            text = f"[{record.relativeCreated / 1000:7.2f}s {record.name}] {text}"
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
        return text


class _StderrHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (looked up per message), above any open progress bar.

    Each message is one ``write`` call: the processes of a ``--devices`` launch share one stderr.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stderr
            with tqdm.external_write_mode(file=stream):
                stream.write(text + "\n")
                stream.flush()
        except Exception:  # logging's own convention: report, never raise
            self.handleError(record)


def configure_logging(verbosity: int = 0) -> None:
    """Show ``cover``'s messages on stderr the way the ``cover`` script does.

    Calling it again replaces the earlier setting; :func:`reset_logging` undoes it. Only the
    ``cover`` logger is touched (other libraries' logging and Python warnings are left alone).

    Args:
        verbosity: -1 warnings and errors only, no progress bars (``--quiet``); 0 also progress
            notes (the default); 1 also debug lines with the seconds since start and the module
            (``--verbose``).

    Raises:
        ValueError: ``verbosity`` is not -1, 0 or 1.

    Examples:
        >>> import cover
        >>> cover.configure_logging(-1)  # warnings and errors only, like ``cover --quiet``
        >>> cover.configure_logging(0)  # progress notes too, like ``cover``
    """
    if verbosity not in LEVELS:
        raise ValueError(f"verbosity: {verbosity!r} is not one of -1, 0, 1")
    reset_logging()
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(verbose=verbosity > 0))
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    logger.propagate = False  # the script owns its stderr: no second copy through the root logger
    logger.setLevel(LEVELS[verbosity])


def reset_logging() -> None:
    """Undo :func:`configure_logging`: the ``cover`` loggers back to the library default (no handlers)."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def progress_shown() -> bool:
    """Whether progress bars are shown: not when the ``cover`` logger is set above INFO (``--quiet``)."""
    return logging.getLogger(ROOT).level <= logging.INFO


def progress_bar(*args: Any, disable: bool = False, **kwargs: Any) -> tqdm:
    """A ``tqdm`` progress bar (same arguments), hidden when :func:`progress_shown` says so."""
    return tqdm(*args, disable=disable or not progress_shown(), **kwargs)


def json_safe(value: Any) -> Any:
    """A copy of nested dicts/lists with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
