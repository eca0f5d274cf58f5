"""Benchmark outputs people look at: ``results.md`` (a small Table 1), ``results.csv`` and figures."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cover.downstream.metrics import EMPTY_CLASS_RULE  # noqa: E402

DICE_NOTE = (
    "Mean foreground Dice over the test cases (background excluded), best per column in bold. "
    f"Empty classes (nnU-Net's rule, never Dice 1): {EMPTY_CLASS_RULE}."
)


def aggregate(cells: Sequence[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, float]]:
    """Mean and standard deviation of the test Dice over seeds.

    Args:
        cells: Cell results with ``task``, ``budget``, ``method``, ``seed`` and ``dice``.

    Returns:
        ``(task, budget, method)`` -> ``{"mean", "std", "n"}`` (Dice in [0, 1]; sample std,
        0 for one seed).
    """
    groups: dict[tuple[str, int, str], list[float]] = {}
    for cell in cells:
        groups.setdefault((cell["task"], int(cell["budget"]), cell["method"]), []).append(float(cell["dice"]))
    result = {}
    for key, values in groups.items():
        array = np.asarray(values, dtype=float)
        std = float(array.std(ddof=1)) if array.size > 1 else 0.0
        result[key] = {"mean": float(array.mean()), "std": std, "n": int(array.size)}
    return result


def write_csv(cells: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per cell (task, method, budget, seed) with Dice, HD95, per-class Dice and the steps it ran."""
    class_keys = sorted({k for c in cells for k in c.get("classes", {})})
    # the protocol: steps run, what ended them, best-validated step, checkpoint tested, its validation Dice
    extra = ["steps", "stopped_by", "best_step", "tested_step", "val_dice"]
    fields = ["task", "method", "budget", "seed", "dice", "hd95", *[f"dice_{k}" for k in class_keys], *extra, "seconds"]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for cell in sorted(cells, key=lambda c: (c["task"], c["method"], c["budget"], c["seed"])):
            row = {k: cell.get(k) for k in ("task", "method", "budget", "seed", "dice", "hd95", "seconds", *extra)}
            row.update({f"dice_{k}": v for k, v in cell.get("classes", {}).items()})
            writer.writerow(row)


def cap_warnings(cells: Sequence[dict[str, Any]]) -> list[str]:
    """One line per cell whose fine-tuning ran into the step cap before its patience ran out.

    Args:
        cells: Cell records (``stopped_by`` is ``patience``, ``cap`` or ``steps``).

    Returns:
        Lines naming the cell, its steps and best step.
    """
    return [
        f"{c['task']} {c['method']} n={c['budget']} seed={c['seed']} hit the step cap ({c['steps']} steps, "
        f"best validation at step {c.get('best_step')}): it may not have converged; raise finetune.steps"
        for c in sorted(cells, key=lambda c: (c["task"], c["method"], c["budget"], c["seed"]))
        if c.get("stopped_by") == "cap"
    ]


def stop_table(
    cells: Sequence[dict[str, Any]], methods: Sequence[str], columns: Sequence[tuple[str, int]]
) -> list[str]:
    """Markdown table: rows = methods, columns = (task, budget), best steps over seeds and stop counts.

    Args:
        cells: Cell records with ``best_step`` and ``stopped_by``.
        methods: Row order.
        columns: ``(task, budget)`` column order.

    Returns:
        Markdown lines; an entry reads ``best 240 / 300 · patience 2, cap 0`` (best steps in
        seed order, then how many seeds stopped by patience and by the cap).
    """
    lines = ["| method | " + " | ".join(f"{t} n={b}" for t, b in columns) + " |", "|---|" + "---|" * len(columns)]
    for method in methods:
        entries = []
        for task, budget in columns:
            group = sorted(
                (c for c in cells if (c["task"], int(c["budget"]), c["method"]) == (task, budget, method)),
                key=lambda c: c["seed"],
            )
            if not group:
                entries.append("–")
                continue
            best = " / ".join(str(c.get("best_step")) for c in group)
            count = {k: sum(c.get("stopped_by") == k for c in group) for k in ("patience", "cap")}
            entries.append(f"best {best} · patience {count['patience']}, cap {count['cap']}")
        lines.append(f"| {method} | " + " | ".join(entries) + " |")
    return lines


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def dice_table(
    stats: dict[tuple[str, int, str], dict[str, float]], methods: Sequence[str], columns: Sequence[tuple[str, int]]
) -> list[str]:
    """Markdown table: rows = methods, columns = (task, budget), Dice % mean ± std, best bold.

    A cell of one seed shows its value alone (no "± 0.0").

    Args:
        stats: Output of :func:`aggregate`.
        methods: Row order.
        columns: ``(task, budget)`` column order.

    Returns:
        Markdown lines (with a mean column over the columns every method completed).
    """
    header = ["method", *[f"{task} n={budget}" for task, budget in columns], "mean"]
    best = {}
    for column in columns:
        means = [stats[(*column, m)]["mean"] for m in methods if (*column, m) in stats]
        best[column] = max(means) if means else None
    complete = [c for c in columns if all((*c, m) in stats for m in methods)]
    averages = {m: float(np.mean([stats[(*c, m)]["mean"] for c in complete])) if complete else None for m in methods}
    best_average = max((v for v in averages.values() if v is not None), default=None)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        row = [method]
        for column in columns:
            entry = stats.get((*column, method))
            if entry is None:
                row.append("–")
                continue
            # One seed has no spread to show: the value alone, never "± 0.0".
            mean, std = _percent(entry["mean"]), _percent(entry["std"])
            text = mean if entry["n"] < 2 else f"{mean} ± {std}"
            if entry["n"] < max((stats[(*column, m)]["n"] for m in methods if (*column, m) in stats), default=0):
                text += f" ({entry['n']} seed{'s' if entry['n'] > 1 else ''})"
            row.append(f"**{text}**" if math.isclose(entry["mean"], best[column]) else text)
        average = averages[method]
        if average is None:
            row.append("–")
        else:
            text = _percent(average)
            row.append(f"**{text}**" if math.isclose(average, best_average) else text)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _maybe(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def analysis_table(analyses: dict[str, dict[str, Any]], methods: Sequence[str]) -> list[str]:
    """Markdown table of the feature-geometry numbers of each method.

    Args:
        analyses: Method -> ``analysis.json`` content.
        methods: Row order.

    Returns:
        Markdown lines.
    """
    distances = [1, 2, 4, 8]
    header = [
        "method",
        "intra-class dist.",
        "inter-class dist.",
        "intra / inter",
        *[f"same-class sim. {d} px" for d in distances],
        "diff.-class sim. 1 px",
        "random same-class sim.",
        "same-class 1 px dist. / inter",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        found = analyses.get(method)
        if found is None:
            continue
        curve = found["neighbour_similarity"]
        same = dict(zip(curve["distance"], curve["same"], strict=True))
        row = [
            method,
            f"{found['intra']:.3f}",
            f"{found['inter']:.3f}",
            f"{found['intra_over_inter']:.3f}",
            *[f"{same[d]:.3f}" if same.get(d) is not None else "–" for d in distances],
            f"{curve['different'][0]:.3f}" if curve["different"][0] is not None else "–",
            f"{found['random_same_class_similarity']:.3f}",
            _maybe(found.get("same_class_neighbour_distance_over_inter_1px")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def plot_label_efficiency(
    stats: dict[tuple[str, int, str], dict[str, float]], methods: Sequence[str], tasks: Sequence[str], out_png: Path
) -> None:
    """Test Dice versus number of labeled cases, one panel per task, one line per method.

    Args:
        stats: Output of :func:`aggregate`.
        methods: Methods (line order).
        tasks: Tasks (panel order).
        out_png: Destination PNG.
    """
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for index, method in enumerate(methods):
            budgets = sorted(b for (t, b, m) in stats if t == task and m == method)
            if not budgets:
                continue
            mean = np.array([100 * stats[(task, b, method)]["mean"] for b in budgets])
            std = np.array([100 * stats[(task, b, method)]["std"] for b in budgets])
            colour = f"C{index}"
            ax.plot(budgets, mean, marker="o", color=colour, label=method)
            ax.fill_between(budgets, mean - std, mean + std, color=colour, alpha=0.15)
        ax.set_xscale("log", base=2)
        all_budgets = sorted({b for (t, b, _m) in stats if t == task})
        ax.set_xticks(all_budgets)
        ax.set_xticklabels([str(b) for b in all_budgets])
        ax.set_xlabel("labeled training cases")
        ax.set_ylabel("test mean foreground Dice (%)")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("label efficiency: mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
