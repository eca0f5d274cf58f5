"""Running ``cover``'s entry point in the test process and reading what it printed."""

from __future__ import annotations

import sys
import warnings

from cover.cli.console import main


def run_cli_output(args: list, monkeypatch, capsys) -> tuple[int, str, list[str]]:
    """``cover.cli.console.main`` in this process: exit status, stdout and the non-empty lines of stderr."""
    monkeypatch.setattr(sys, "argv", ["cover", *map(str, args)])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, list[str]]:
    """``cover.cli.console.main`` in this process: exit status and the non-empty lines of stderr."""
    code, _, lines = run_cli_output(args, monkeypatch, capsys)
    return code, lines
