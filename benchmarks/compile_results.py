"""Combine ``cover benchmark`` output folders of one task into one table (one process per method).

Running each method in its own process lets methods run side by side on separate cores; this
merges their finished cells (and, where present, pretraining records and feature analyses)
into ``DEST/table.md``, ``DEST/results.csv`` and ``DEST/label_efficiency.png``, and copies each
folder's own ``results.md`` as ``DEST/results_<folder name>.md``.

Usage: python benchmarks/compile_results.py DEST TASK OUT [OUT ...]
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from cover.benchmarking.report import DICE_NOTE, aggregate, analysis_table, dice_table, plot_label_efficiency, write_csv

ORDER = ("scratch", "dense-infonce", "simclr", "cover")


def main(dest: Path, task: str, outs: list[Path]) -> str:
    """Write the merged files and return the Markdown table."""
    dest.mkdir(parents=True, exist_ok=True)
    cells, pretrains, analyses = [], {}, {}
    for out in outs:
        for f in sorted((out / "cells").glob("*.json")):
            record = json.loads(f.read_text())
            if record.get("status") != "done":
                continue
            if f.name.startswith("pretrain__"):
                pretrains[record["method"]] = record
            elif f.name.startswith(f"analysis__{task}__"):
                analyses[record["method"]] = record
            elif f.name.startswith(f"{task}__"):
                cells.append(record)
        if (out / "results.md").exists():  # a run stopped before its report has none
            shutil.copy(out / "results.md", dest / f"results_{out.name}.md")
    methods = [m for m in ORDER if any(c["method"] == m for c in cells)]
    stats = aggregate(cells)
    budgets = sorted({c["budget"] for c in cells})
    seeds = sorted({c["seed"] for c in cells})
    write_csv(cells, dest / "results.csv")
    plot_label_efficiency(stats, methods, [task], dest / "label_efficiency.png")
    lines = [f"## Test Dice (%), mean ± std over seeds {', '.join(map(str, seeds))}", "", DICE_NOTE, ""]
    lines += [*dice_table(stats, methods, [(task, b) for b in budgets]), ""]
    header = ["| method | " + " | ".join(f"n={b}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    lines += ["## Validation Dice (%) of the tested checkpoint, mean over seeds", "", *header]
    for m in methods:
        means = [np.mean([c["val_dice"] for c in cells if c["method"] == m and c["budget"] == b]) for b in budgets]
        lines.append("| " + " | ".join([m, *(f"{100 * v:.1f}" for v in means)]) + " |")
    lines += ["", "## Paired difference to scratch (test Dice points, same seed = same labeled cases)", "", *header]
    base = {(c["budget"], c["seed"]): c["dice"] for c in cells if c["method"] == "scratch"}
    for m in methods[1:] if base else []:
        row = [m]
        for b in budgets:
            diffs = [100 * (c["dice"] - base[(b, c["seed"])]) for c in cells if c["method"] == m and c["budget"] == b]
            row.append(" / ".join(f"{d:+.1f}" for d in diffs) + f" (mean {np.mean(diffs):+.1f})")
        lines.append("| " + " | ".join(row) + " |")
    if pretrains:
        lines += [
            "",
            "## Pretraining (each backbone's own record; a reused backbone keeps the minutes of the run that made it)",
        ]
        lines += ["", "| method | steps | minutes | final loss | held-out EPE (px) |"]
        lines.append("|---|---|---|---|---|")
        for m in [m for m in ORDER if m in pretrains]:
            d = pretrains[m]
            epe = f"{d['epe']:.2f} (zero field {d['epe_zero']:.2f})" if d.get("epe") is not None else "–"
            lines.append(f"| {m} | {d['steps']} | {d['seconds'] / 60:.1f} | {d['final_loss']:.4f} | {epe} |")
    if analyses:
        lines += ["", "## Feature geometry on the test cases (`cover analyze`)", "", *analysis_table(analyses, ORDER)]
        lines += ["", "| backbone | random pixel-pair cosine | effective rank | collapsed |", "|---|---|---|---|"]
        for m in [m for m in ORDER if m in analyses]:
            a = analyses[m]
            lines.append(f"| {m} | {a['pair_cos']:.3f} | {a['eff_rank']:.1f} | {a['collapsed']} |")
    text = "\n".join(lines) + "\n"
    (dest / "table.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2], [Path(p) for p in sys.argv[3:]]), end="")
