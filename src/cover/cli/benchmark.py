"""``cover benchmark``: a thin typer command over :func:`cover.benchmark.runner.benchmark`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cover.cli.options import DryRunOpt, Opt


def add_commands(app: typer.Typer) -> None:
    """Add ``cover benchmark`` to the ``cover`` app."""
    app.command()(benchmark)


def _numbers(text: str | None) -> list[int] | None:
    return [int(v) for v in text.split(",") if v.strip()] if text else None


def benchmark(
    config: Annotated[Path | None, Opt("--config", help="YAML file (see configs/benchmark/).")] = None,
    preset: Annotated[
        str | None, Opt(help="quick (minutes), default (about 1 h on 2 cores; used without --config), paper (GPU).")
    ] = None,
    out: Annotated[str | None, Opt(help="Output folder; re-running into it skips finished cells.")] = None,
    methods: Annotated[str | None, Opt(help="Comma-separated methods, e.g. scratch,dense-infonce,cover.")] = None,
    seeds: Annotated[str | None, Opt(help="Comma-separated fine-tuning seeds, e.g. 0,1,2.")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda or cuda:N.")] = None,
    notes: Annotated[str | None, Opt(help="Free text for results.md (e.g. the machine's load).")] = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Pretrain each method, fine-tune on each task/label budget/seed, write results.md (a small Table 1).

    --dry-run prints the resolved benchmark config and each pretraining run's resolved settings.
    """
    from cover.benchmark.runner import benchmark as run

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
    if dry_run:
        _show(config, options)
        return
    command = "cover " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run(config, command=command, **options)
    print((Path(summary["out"]) / "results.md").read_text())


def _show(config: Path | None, options: dict) -> None:
    """``--dry-run``: the benchmark config, then every pretraining run as ``cover pretrain`` resolves it."""
    import yaml

    from cover.benchmark.config import resolve_benchmark_config
    from cover.benchmark.runner import pretrain_values
    from cover.cli.options import show_config
    from cover.config import resolve_pretrain_config, to_dict
    from cover.methods.scratch import is_pretrained

    resolved = resolve_benchmark_config(config, **options)
    show_config(resolved)
    runs = {}
    for dim in sorted({t.dim for t in resolved.task_configs()}):
        for method in filter(is_pretrained, resolved.methods):
            values = to_dict(resolve_pretrain_config(pretrain_values(resolved, method, dim)))
            values.pop("out", None)
            runs[f"{method}-{dim}d"] = values
    print(yaml.safe_dump({"pretraining": runs}, sort_keys=False), end="")
