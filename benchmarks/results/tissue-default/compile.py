"""Combine per-process `cover benchmark --preset default` outputs on one task into one table (stop 15).

Usage: python compile.py DEST TASK OUT [OUT ...]   (each OUT a benchmark output folder)
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from cover.benchmark.report import DICE_NOTE, aggregate, dice_table, plot_label_efficiency, write_csv

dest, task, outs = Path(sys.argv[1]), sys.argv[2], [Path(p) for p in sys.argv[3:]]
dest.mkdir(parents=True, exist_ok=True)
methods = [m for m in ("scratch", "dense-infonce", "simclr", "cover")]
cells = []
for out in outs:
    for f in sorted((out / "cells").glob(f"{task}__*.json")):
        d = json.loads(f.read_text())
        if d.get("status") == "done":
            cells.append(d)
    shutil.copy(out / "results.md", dest / f"results_{out.name}.md")
methods = [m for m in methods if any(c["method"] == m for c in cells)]
stats = aggregate(cells)
budgets = sorted({c["budget"] for c in cells})
seeds = sorted({c["seed"] for c in cells})
columns = [(task, b) for b in budgets]
write_csv(cells, dest / "results.csv")
plot_label_efficiency(stats, methods, [task], dest / "label_efficiency.png")
lines = [f"## Test Dice (%), mean ± std over seeds {', '.join(map(str, seeds))}", "", DICE_NOTE, ""]
lines += [*dice_table(stats, methods, columns), ""]
lines += [
    "## Validation Dice (%) of the tested checkpoint, mean over seeds",
    "",
    "| method | " + " | ".join(f"n={b}" for b in budgets) + " |",
    "|---|" + "---|" * len(budgets),
]
for m in methods:
    row = [m]
    for b in budgets:
        v = [c["val_dice"] for c in cells if c["method"] == m and c["budget"] == b]
        row.append(f"{100 * np.mean(v):.1f}")
    lines.append("| " + " | ".join(row) + " |")
lines += [
    "",
    "## Paired difference to scratch (test Dice points, same seed = same labeled cases)",
    "",
    "| method | " + " | ".join(f"n={b}" for b in budgets) + " |",
    "|---|" + "---|" * len(budgets),
]
base = {(c["budget"], c["seed"]): c["dice"] for c in cells if c["method"] == "scratch"}
for m in methods[1:]:
    row = [m]
    for b in budgets:
        diffs = [100 * (c["dice"] - base[(b, c["seed"])]) for c in cells if c["method"] == m and c["budget"] == b]
        row.append(" / ".join(f"{d:+.1f}" for d in diffs) + f" (mean {np.mean(diffs):+.1f})")
    lines.append("| " + " | ".join(row) + " |")
(dest / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
