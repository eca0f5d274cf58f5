"""Running ``cover``'s entry point in the test process and reading what it printed."""

from __future__ import annotations

import sys
import warnings

from cover.cli import main


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, list[str]]:
    """``cover.cli.main`` in this process: exit status and the non-empty lines of stderr."""
    monkeypatch.setattr(sys, "argv", ["cover", *map(str, args)])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]
