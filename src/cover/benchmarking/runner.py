"""``cover benchmark`` and :func:`cover.benchmark`: pretrain every method, fine-tune, compare.

For each pretraining method and each dimension the tasks need, :func:`cover.pretrain` runs
with the shared settings (``scratch`` is not pretrained). Then, for each seed, task, label
budget and method (a *cell*), :func:`cover.finetune` trains on ``budget`` labeled cases drawn
by the seed and :func:`cover.evaluate` scores it on the task's test cases. With
``val_fraction > 0`` each seed holds out that part of the labeled pool for validation (the
same cases for every budget) and the best-validated checkpoint is tested (``finetune.patience``
stops early); otherwise the last checkpoint is. ``steps_per_case`` scales the fine-tuning
steps with the budget. The test cases are never used for any choice. Each method's backbone
is also measured by :func:`cover.analyze` on the first task's test images.

Every finished unit of work leaves a small JSON record in ``OUT/cells/`` holding a
fingerprint of the settings that produced it; re-running skips records whose fingerprint
matches, resumes an interrupted pretraining or fine-tuning from its checkpoint
(``resume=auto``), and refuses finished records made with other settings (choose another
``out``). A unit that failed or was interrupted is recorded as such (``failed`` with its error,
``interrupted``); when a corrected rerun changes its settings it is redone from the start, its
earlier run folder moved aside (``NAME.superseded``, never deleted) with a warning naming it.
Before any work, :func:`cover.benchmarking.checks.check_data` reads every user task's files.
SIGTERM/SIGINT inside a training run checkpoint it; between training runs the benchmark
stops after the current unit; either way it exits with the command that continues.

Outputs: ``results.md`` (rows = methods, columns = task x budget, test Dice % mean ± std over
seeds, best bold, plus the feature-geometry table), ``results.csv`` (one row per cell),
``label_efficiency.png``, ``neighbour_similarity.png``, ``config.yaml``; the runs themselves
under ``pretrain/``, ``finetune/``, ``analysis/`` and generated task data under ``data/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cover.benchmarking.checks import check_data
from cover.benchmarking.config import (
    BenchmarkConfig,
    finetune_values,
    model_options,
    pretrain_values,
    resolve_benchmark_config,
    resolved_pretraining,
)
from cover.benchmarking.report import (
    DICE_NOTE,
    aggregate,
    analysis_table,
    cap_warnings,
    dice_table,
    plot_label_efficiency,
    stop_table,
    write_csv,
)
from cover.benchmarking.tasks import TaskConfig, describe_task, task_data
from cover.config import save_yaml, to_dict
from cover.engine.guards import StopSignals
from cover.errors import ConfigError, TrainingInterrupted
from cover.methods.scratch import is_pretrained
from cover.runtime import progress_bar

log = logging.getLogger(__name__)

_OWN = {"config.yaml", "cells", "pretrain", "finetune", "analysis", "data", "results.md", "results.csv"}


def fingerprint(values: Any) -> str:
    """Short stable hash of JSON-able settings."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Records:
    """The JSON records of finished (and started) work in ``OUT/cells``.

    A record's ``status`` is ``running`` while its unit works, then ``done``, ``failed`` (with
    the error) or ``interrupted``; a unit killed outright stays ``running``.

    Args:
        folder: ``OUT/cells``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        """Record file of a unit of work."""
        return self.folder / f"{name}.json"

    def get(self, name: str, print_: str) -> tuple[dict[str, Any] | None, bool]:
        """The finished record of ``name`` made with fingerprint ``print_``, and whether to resume.

        Returns:
            ``(record, resume)``: the ``done`` record (else ``None``), and whether an unfinished
            attempt with the same settings left a run to continue (an unfinished attempt with
            other settings is redone from the start).

        Raises:
            ConfigError: Finished work made with other settings.
        """
        path = self.path(name)
        if not path.is_file():
            return None, False
        record = json.loads(path.read_text())
        same = record.get("fingerprint") == print_
        if record.get("status") == "done":
            if not same:
                raise ConfigError(
                    f"out: {path} is finished work made with other settings than this run's; choose another "
                    "--out (or delete that record to redo it)"
                )
            return record, False
        if not same:
            log.warning(
                "benchmark: redoing %s from the start: its earlier attempt (%s) used other settings", name,
                record.get("status", "unfinished"),
            )  # fmt: skip
        return None, same

    def put(self, name: str, record: dict[str, Any]) -> None:
        """Write a record atomically."""
        path = self.path(name)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        os.replace(temporary, path)

    @contextlib.contextmanager
    def attempt(self, name: str, record: dict[str, Any]) -> Iterator[None]:
        """Mark ``name`` running; on an error or interruption, record it as ``failed``/``interrupted``."""
        self.put(name, {**record, "status": "running"})
        try:
            yield
        except (TrainingInterrupted, KeyboardInterrupt):
            self.put(name, {**record, "status": "interrupted"})
            raise
        except Exception as error:
            self.put(name, {**record, "status": "failed", "error": str(error)[:2000]})
            raise


def _set_aside(folder: Path, resume: bool) -> bool:
    """Whether ``folder`` holds a run to resume; a run of other settings is moved aside (never deleted).

    Args:
        folder: The unit's run folder.
        resume: The unit's record says an unfinished attempt had the same settings.
    """
    if not (folder.is_dir() and any(folder.iterdir())):
        return False
    if resume:
        return True
    aside = folder.with_name(f"{folder.name}.superseded")
    for number in itertools.count(2):
        if not aside.exists():
            break
        aside = folder.with_name(f"{folder.name}.superseded-{number}")
    folder.rename(aside)
    log.warning("benchmark: %s came from an attempt with other settings; moved to %s", folder, aside.name)
    return False


def _prepare(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in _OWN and not p.name.endswith(".png")]
        if foreign and not (out / "cells").is_dir():
            raise ConfigError(
                f"out: {out} holds files that are not a cover benchmark's ({foreign[0]}); choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _stable(values: dict[str, Any]) -> dict[str, Any]:
    """Settings as fingerprinted: the intensity preset under its former name ``preset``.

    Records written before the key was renamed ``intensity`` thus still match the same settings.
    """
    return {("preset" if k == "intensity" else k): v for k, v in values.items()}


def _pretrain(
    config: BenchmarkConfig, method: str, dim: int, out: Path, records: Records
) -> tuple[dict[str, Any], bool]:
    """Pretrain one method for one dimension, or reuse the finished run; ``(record, reused)``."""
    from cover.pretraining.pretrain import pretrain

    values = pretrain_values(config, method, dim)
    name = f"pretrain__{method}__{dim}d"
    print_ = fingerprint(_stable(values))
    found, resume = records.get(name, print_)
    if found is not None:
        return found, True
    folder = out / "pretrain" / f"{method}-{dim}d"
    started = _set_aside(folder, resume)
    log.info("benchmark: pretraining %s (%dD)%s -> %s", method, dim, " (resuming)" if started else "", folder)
    with records.attempt(name, {"fingerprint": print_, "settings": values}):
        summary = pretrain(values, out=str(folder), device=config.device, resume="auto" if started else None)
    record = {
        "fingerprint": print_,
        "status": "done",
        "method": method,
        "dim": dim,
        "checkpoint": os.path.relpath(summary["checkpoint"], out),  # relative: the folder may move
        "seconds": summary["seconds"],
        "steps": summary["steps"],
        "final_loss": summary.get("final_loss"),
        "epe": summary.get("epe"),
        "epe_zero": summary.get("epe_zero"),
        "settings": values,
    }
    records.put(name, record)
    return record, False


def _finetune_and_test(
    config: BenchmarkConfig,
    values: dict[str, Any],
    test: dict[str, str | None],
    pretrained: dict[str, Any] | None,
    folder: Path,
    started: bool,
    out: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fine-tune one cell (continuing an interrupted run of the same settings) and test it."""
    from cover.downstream.evaluate import evaluate
    from cover.downstream.finetune import finetune

    summary = finetune(
        values,
        pretrained=str(out / pretrained["checkpoint"]) if pretrained else None,
        out=str(folder),
        resume="auto" if started else None,
        overwrite=not started,
        device=config.device,
    )
    scores = evaluate(
        summary["checkpoint"],  # the best-validated checkpoint with validation, else the last
        images=test["test_images"],
        labels=test["test_labels"],
        datalist=test["test_datalist"],
        out=folder / "test",
        device=config.device,
        overwrite=True,
    )
    return summary, scores


def _finetune_cell(
    config: BenchmarkConfig,
    task: TaskConfig,
    data: dict[str, str | None],
    method: str,
    budget: int,
    seed: int,
    pretrained: dict[str, Any] | None,
    out: Path,
    records: Records,
) -> tuple[dict[str, Any], bool]:
    """Fine-tune and test one cell, or reuse its record; ``(record, reused)``."""
    values = finetune_values(config, task, data, budget, seed)
    test = {k: data[k] for k in ("test_images", "test_labels", "test_datalist")}
    name = f"{task.name}__{method}__n{budget}__seed{seed}"
    pretrained_print = pretrained and pretrained["fingerprint"]
    print_ = fingerprint({"finetune": _stable(values), "test": test, "pretrain": pretrained_print})
    found, resume = records.get(name, print_)
    if found is not None:
        return found, True
    folder = out / "finetune" / task.name / method / f"n{budget}-seed{seed}"
    with records.attempt(name, {"fingerprint": print_}):
        tic = time.monotonic()
        summary, scores = _finetune_and_test(config, values, test, pretrained, folder, _set_aside(folder, resume), out)
    record = {
        "fingerprint": print_,
        "status": "done",
        "task": task.name,
        "method": method,
        "budget": budget,
        "seed": seed,
        "dice": scores["mean_dice"],
        "dice_std_over_cases": scores["mean_dice_std"],
        "hd95": scores.get("mean_hd95"),
        "classes": {k: v["dice_mean"] for k, v in scores["classes"].items()},
        "num_train": summary["num_train"],
        "num_val": summary["num_val"],
        "steps": summary["steps"],
        "tested_step": summary["best_step"] if summary["select"] == "best" else summary["steps"],
        "best_step": summary["best_step"],
        "stopped_by": summary["stopped_by"],
        "val_dice": summary.get("best_val_dice") if summary["select"] == "best" else summary.get("last_val_dice"),
        "num_test": scores["num_cases"],
        "seconds": round(time.monotonic() - tic, 1),
    }
    records.put(name, record)
    return record, False


def _analyse(
    config: BenchmarkConfig,
    task: TaskConfig,
    data: dict[str, str | None],
    method: str,
    pretrained: dict[str, Any] | None,
    scratch_model: dict[str, Any],
    out: Path,
    records: Records,
) -> tuple[dict[str, Any], bool]:
    """Feature geometry of one method's backbone on the task's test images; ``(record, reused)``."""
    from cover.analysis.analyze import analyze

    options = dict(config.analyze) if isinstance(config.analyze, dict) else {}
    builtin = task.name == "mni-tissue-2d"  # analyze's built-in default: the same test-slab slices
    source = {} if builtin else {"images": data["test_images"], "labels": data["test_labels"]}
    if not builtin:
        source.update(datalist=data["test_datalist"], intensity=task.intensity)
    model = {**scratch_model, "spatial_dims": task.dim, "in_channels": 1}
    name = f"analysis__{task.name}__{method}"
    pretrained_print = pretrained and pretrained["fingerprint"]
    print_ = fingerprint({"options": options, "source": _stable(source), "model": model, "pretrain": pretrained_print})
    found, _ = records.get(name, print_)
    if found is not None:
        return found, True
    with records.attempt(name, {"fingerprint": print_}):
        result = analyze(
            str(out / pretrained["checkpoint"]) if pretrained else None,
            out=out / "analysis" / method,
            overwrite=True,
            device=config.device,
            model=None if pretrained else model,
            class_names=list(task.class_names) if task.class_names else None,
            **source,
            **options,
        )
    record = {"fingerprint": print_, "status": "done", "task": task.name, "method": method, **result}
    records.put(name, record)
    return record, False


def _machine(config: BenchmarkConfig) -> str:
    from cover.engine.distributed import resolve_device

    device = resolve_device(config.device)
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__} "
    text += f"({torch.get_num_threads()} torch threads), device {device}"
    if device.type == "cuda":
        text += f" ({torch.cuda.get_device_name(device)})"
    return text


def _protocol_text(config: BenchmarkConfig) -> str:
    """How cells are fine-tuned and which checkpoint is tested, in words."""
    steps = config.finetune.get("steps")
    text = (
        f"max({steps}, {config.steps_per_case} x n) fine-tuning steps"
        if config.steps_per_case
        else f"{steps if steps is not None else 'epochs-based'} fine-tuning steps for every n"
    )
    if config.val_fraction > 0:
        patience, every = config.finetune.get("patience"), config.finetune.get("val_every")
        stop = f", early stop after {patience} validations without gain" if patience else ""
        stop += f" (validation every {every} steps)" if patience and every else ""
        if patience and config.finetune.get("lr_schedule") == "constant":
            text = text.replace("fine-tuning steps", "fine-tuning steps at most (a cap: constant learning rate)")
        return (
            f"{text}; {config.val_fraction:g} of each task's labeled pool held out per seed for validation "
            f"(same cases for every n){stop}; the best-validated checkpoint tested; test cases used for nothing else"
        )
    return f"{text}; no validation split, last checkpoint tested"


def _write_report(
    config: BenchmarkConfig,
    tasks: list[TaskConfig],
    datas: dict[str, dict[str, str | None]],
    cells: list[dict[str, Any]],
    pretrains: dict[tuple[str, int], dict[str, Any]],
    analyses: dict[str, dict[str, Any]],
    out: Path,
    command: str,
    seconds: float,
) -> dict[str, Any]:
    """Write ``results.csv``, the figures and ``results.md``; the summary :func:`benchmark` returns."""
    methods = list(config.methods)
    stats = aggregate(cells)
    write_csv(cells, out / "results.csv")
    _write_figures(stats, analyses, methods, [t.name for t in tasks], out)
    columns = [(t.name, b) for t in tasks for b in sorted(t.budgets)]
    expected = len(columns) * len(methods) * len(config.seeds)
    compute = (sum(p["seconds"] for p in pretrains.values()), sum(c.get("seconds", 0) for c in cells))
    lines = [
        *_header_lines(config, command, seconds, compute, f"{len(cells)} of {expected}"),
        *_dice_lines(stats, methods, columns),
        *(_stop_lines(cells, methods, columns) if any("stopped_by" in c for c in cells) else []),
        *(_analysis_lines(analyses, methods) if analyses else []),
        *_pretraining_lines(pretrains),
        *["## What these tasks are", "", *[f"- {describe_task(t, datas[t.name])}" for t in tasks], ""],
    ]
    (out / "results.md").write_text("\n".join(lines))
    keys = ("intra", "inter", "intra_over_inter", "same_class_neighbour_similarity_1px")
    return {
        "results": {f"{t}|n={b}|{m}": v for (t, b, m), v in stats.items()},
        "analysis": {m: {k: a[k] for k in keys} for m, a in analyses.items()},
        "cells": len(cells),
        "expected_cells": expected,
    }


def _write_figures(
    stats: dict[tuple[str, int, str], dict[str, Any]],
    analyses: dict[str, dict[str, Any]],
    methods: list[str],
    task_names: list[str],
    out: Path,
) -> None:
    """``label_efficiency.png`` and, with analyses, ``neighbour_similarity.png`` (every method's curve)."""
    from cover.analysis.feature_figures import plot_neighbour_similarity

    plot_label_efficiency(stats, methods, task_names, out / "label_efficiency.png")
    if analyses:
        curves = {m: analyses[m]["neighbour_similarity"] for m in methods if m in analyses}
        random_same = {m: analyses[m]["random_same_class_similarity"] for m in methods if m in analyses}
        plot_neighbour_similarity(curves, out / "neighbour_similarity.png", random_same)


def _header_lines(
    config: BenchmarkConfig, command: str, seconds: float, compute: tuple[float, float], finished: str
) -> list[str]:
    """The title and the run's facts: command, machine, time, cells, settings, seeds, notes.

    Args:
        config: The benchmark's settings.
        command: The command that ran.
        seconds: This invocation's wall time.
        compute: Recorded seconds of pretraining and of fine-tuning + testing (reused work included).
        finished: ``"N of M"`` cells.
    """
    lines = [
        f"# cover benchmark{f' (preset {config.preset})' if config.preset else ''}",
        "",
        f"- command: `{command}`",
        f"- machine: {_machine(config)}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}; this invocation took {seconds / 60:.1f} min; "
        f"recorded compute: pretraining {compute[0] / 60:.1f} min, fine-tuning + testing {compute[1] / 60:.1f} min",
        f"- cells finished: {finished} (task x budget x method x seed)",
        f"- backbone: `{config.model or 'paper U-Net'}`; pretraining `{dict(config.pretrain)}` (2D "
        f"`{config.pretrain_2d}`, 3D `{config.pretrain_3d}`), one pretraining per method; fine-tuning "
        f"`{config.finetune}` on `n` labeled cases drawn per seed; {_protocol_text(config)}",
        f"- seeds: {list(config.seeds)}",
    ]
    return lines + ([f"- notes: {config.notes}"] if config.notes else [])


def _dice_lines(
    stats: dict[tuple[str, int, str], dict[str, Any]], methods: list[str], columns: list[tuple[str, int]]
) -> list[str]:
    """The test Dice table (methods x task and budget)."""
    return ["", "## Test Dice (%), mean ± std over seeds", "", DICE_NOTE, "", *dice_table(stats, methods, columns), ""]


def _stop_lines(cells: list[dict[str, Any]], methods: list[str], columns: list[tuple[str, int]]) -> list[str]:
    """How the cells stopped (patience or the step cap), with a warning per capped method and column."""
    warnings = cap_warnings(cells)
    return [
        "## How the cells stopped",
        "",
        "Best-validated step of each seed, and how many seeds stopped by patience / by the step cap "
        "(a cell that hits the cap may still have been improving).",
        "",
        *stop_table(cells, methods, columns),
        "",
        *([f"**Warning:** {line}" for line in warnings] + [""] if warnings else []),
    ]


def _analysis_lines(analyses: dict[str, dict[str, Any]], methods: list[str]) -> list[str]:
    """The feature-geometry table of the pretrained backbones (``cover analyze``)."""
    source = next(iter(analyses.values())).get("source", "")
    return [
        "## Feature geometry of the pretrained backbones (`cover analyze`)",
        "",
        f"Finest decoder features on {source}; cosine distances (1 - cos) between sampled pixels "
        "of one class (intra) and of two classes (inter), and the mean cosine similarity of "
        "same-class pixel pairs at 1-8 px. Binary pixel contrast is expected to push same-class "
        "neighbours apart (lower similarity) where COVER keeps them close.",
        "",
        *analysis_table(analyses, methods),
        "",
    ]


def _pretraining_lines(pretrains: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """One row per pretraining run: steps, minutes, final loss and endpoint error on new view pairs."""
    lines = [
        "## Pretraining",
        "",
        "| method | dim | steps | minutes | final loss | EPE on new view pairs (px) |",
        "|---|---|---|---|---|---|",
    ]
    for (method, dim), record in sorted(pretrains.items()):
        epe = f"{record['epe']:.2f} (zero field {record['epe_zero']:.2f})" if record.get("epe") is not None else "–"
        loss = f"{record['final_loss']:.4f}" if record.get("final_loss") is not None else "–"
        lines.append(f"| {method} | {dim}D | {record['steps']} | {record['seconds'] / 60:.1f} | {loss} | {epe} |")
    return lines + [""]


def plan(config: BenchmarkConfig, tasks: list[TaskConfig]) -> list[str]:
    """The units of work of a benchmark, one line each (``--dry-run``)."""
    pretrained = [m for m in config.methods if is_pretrained(m)]
    lines = [f"pretrain {m} ({d}D)" for d in sorted({t.dim for t in tasks}) for m in pretrained]
    if config.analyze is not False:
        lines += [f"analyse {m} on {tasks[0].name}" for m in config.methods]
    for task in tasks:
        cells = len(task.budgets) * len(config.methods) * len(config.seeds)
        grid = f"budgets {sorted(task.budgets)} x methods {list(config.methods)} x seeds {list(config.seeds)}"
        intensity = task.intensity or "from the checkpoint"
        lines.append(f"fine-tune + test {task.name} ({task.dim}D, intensity {intensity}): {grid} = {cells} cells")
    return lines


def benchmark(
    config: BenchmarkConfig | dict[str, Any] | str | Path | None = None,
    *,
    command: str | None = None,
    dry_run: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Pretrain every method, fine-tune and test on every task, budget and seed; write the tables.

    Args:
        config: A :class:`~cover.benchmarking.config.BenchmarkConfig`, a dict of its keys, a YAML
            path, or ``None`` (with ``preset=...``).
        command: The command line to print in ``results.md`` (the CLI passes it).
        dry_run: Check everything (config and data) and return ``config`` and ``plan`` (the units
            of work, one line each) without writing anything.
        **options: Config keys overriding ``config`` (``preset``, ``out``, ``device``, ...).

    Returns:
        ``results`` (``"task|n=budget|method"`` -> Dice mean/std/n), ``analysis`` (per method),
        ``cells`` (finished) and ``expected_cells``, ``ran``/``skipped`` (units of work: pretraining
        runs, analyses and cells run now or reused from records), ``out`` and ``config``.

    Examples:
        The smallest preset (skipped when the examples run: it pretrains and fine-tunes every
        method, minutes on a CPU):

        >>> import cover
        >>> report = cover.benchmark(preset="quick", out="runs/bench")  # doctest: +SKIP
    """
    tic = time.monotonic()
    config = resolve_benchmark_config(config, **options)
    tasks = config.task_configs()
    check_data(config, tasks)  # before any work: a bad task must not wait for the pretraining
    if dry_run:
        return {
            "config": {**to_dict(config), "tasks": [to_dict(t) for t in tasks]},
            "pretraining": resolved_pretraining(config, tasks),
            "plan": plan(config, tasks),
        }
    out = _prepare(Path(config.out))
    again = command or "cover.benchmark(...) with the same settings"
    with StopSignals() as signals:
        try:
            return _run(config, out, signals, command, tic)
        except TrainingInterrupted:
            raise TrainingInterrupted(
                f"benchmark interrupted; finished work is kept in {out / 'cells'} and the interrupted run keeps "
                f"its checkpoint; continue with: {again}"
            ) from None


def _run(config: BenchmarkConfig, out: Path, signals: StopSignals, command: str | None, tic: float) -> dict[str, Any]:
    """The benchmark's units of work, checking for a stop request after each one."""

    def check_stop() -> None:
        if signals.requested:
            raise TrainingInterrupted("stop requested")

    tasks = config.task_configs()
    save_yaml(config, out / "config.yaml")
    records = Records(out / "cells")
    scratch_model = model_options(config)[1]
    datas = {t.name: task_data(t, out / "data") for t in tasks}
    pretrains: dict[tuple[str, int], dict[str, Any]] = {}
    ran, skipped = 0, 0
    for dim in sorted({t.dim for t in tasks}):
        for method in config.methods:
            if is_pretrained(method):
                pretrains[(method, dim)], reused = _pretrain(config, method, dim, out, records)
                ran, skipped = ran + (not reused), skipped + reused
                check_stop()
    analyses: dict[str, dict[str, Any]] = {}
    if config.analyze is not False:
        first = tasks[0]
        for method in config.methods:
            pretrained = pretrains.get((method, first.dim))
            analyses[method], reused = _analyse(
                config, first, datas[first.name], method, pretrained, scratch_model, out, records
            )
            ran, skipped = ran + (not reused), skipped + reused
            check_stop()
    plan = [
        (seed, task, budget, method)
        for seed in config.seeds
        for task in tasks
        for budget in sorted(task.budgets)
        for method in config.methods
    ]
    cells: list[dict[str, Any]] = []
    progress = progress_bar(plan, desc="benchmark cells", dynamic_ncols=True)
    for seed, task, budget, method in progress:
        progress.set_postfix_str(f"{task.name} {method} n={budget} seed={seed}")
        cell, reused = _finetune_cell(
            config,
            task,
            datas[task.name],
            method,
            budget,
            seed,
            pretrains.get((method, task.dim)),
            out,
            records,
        )
        ran, skipped = ran + (not reused), skipped + reused
        cells.append(cell)
        check_stop()
    progress.close()
    for line in cap_warnings(cells):
        log.warning("benchmark: %s", line)
    summary = _write_report(
        config,
        tasks,
        datas,
        cells,
        pretrains,
        analyses,
        out,
        command or "python: cover.benchmark(...)",
        time.monotonic() - tic,
    )
    summary.update(out=str(out), ran=ran, skipped=skipped, config=dataclasses.asdict(config))
    log.info(f"benchmark: {len(cells)} cells; {ran} units of work run now, {skipped} reused; results in {out}")
    return summary
