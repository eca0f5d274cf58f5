"""``cover benchmark``: a thin typer command over :func:`cover.benchmarking.runner.benchmark`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cover.cli.options import Opt


def add_commands(app: typer.Typer) -> None:
    """Add ``cover benchmark`` to the ``cover`` app."""
    app.command()(benchmark)


def _numbers(text: str | None) -> list[int] | None:
    return [int(v) for v in text.split(",") if v.strip()] if text else None


def benchmark(
    config: Annotated[Path | None, Opt("--config", help="YAML file (see configs/benchmark/).")] = None,
    preset: Annotated[
        str | None, Opt(help="quick (minutes), default (about 4 CPU-core hours; used without --config), paper (GPU).")
    ] = None,
    out: Annotated[str | None, Opt(help="Output folder; re-running into it skips finished cells.")] = None,
    methods: Annotated[str | None, Opt(help="Comma-separated methods, e.g. scratch,dense-infonce,cover.")] = None,
    seeds: Annotated[str | None, Opt(help="Comma-separated fine-tuning seeds, e.g. 0,1,2.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or cuda:N.")] = None,
    notes: Annotated[str | None, Opt(help="Free text for results.md (e.g. the machine's load).")] = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="Check the config and every task's files; print the config and plan; run nothing.")
    ] = False,
) -> None:
    """Pretrain each method, fine-tune on each task/label budget/seed, write results.md (a small Table 1).

    --dry-run checks the config and every task's files, then prints the resolved benchmark config,
    each pretraining run as ``cover pretrain`` resolves it, and the plan.
    """
    from cover.benchmarking.runner import benchmark as run

    if config is None and preset is None:
        preset = "default"
    options = {
        "preset": preset,
        "out": out,
        "methods": [m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        "seeds": _numbers(seeds),
        "device": device,
        "notes": notes,
    }
    command = "cover " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if dry_run:
        import yaml

        checked = run(config, dry_run=True, **options)
        print(yaml.safe_dump(checked["config"], sort_keys=False), end="")
        print(yaml.safe_dump({"pretraining": checked["pretraining"]}, sort_keys=False), end="")
        print("# plan (config and data checked; nothing run or written):")
        print("\n".join(f"#   {line}" for line in checked["plan"]))
        return
    summary = run(config, command=command, **options)
    print((Path(summary["out"]) / "results.md").read_text())
