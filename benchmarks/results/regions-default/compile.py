"""Combine the four per-method `cover benchmark --preset default` outputs into one table (stop 14)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "/tmp/final/src")
from cover.benchmark.report import DICE_NOTE, aggregate, analysis_table, dice_table, plot_label_efficiency, write_csv

dest = Path(sys.argv[1])
dest.mkdir(parents=True, exist_ok=True)
methods = ["scratch", "dense-infonce", "simclr", "cover"]
cells, pre, analyses = [], {}, {}
for m in methods:
    out = Path(f"/tmp/final/A_{m}")
    for f in sorted((out / "cells").glob("*.json")):
        d = json.loads(f.read_text())
        if d.get("status") != "done":
            continue
        if f.name.startswith("pretrain__"):
            pre[m] = d
        elif f.name.startswith("analysis__"):
            analyses[m] = d
        elif "budget" in d:
            cells.append(d)
    shutil.copy(out / "results.md", dest / f"results_{m}.md")
stats = aggregate(cells)
budgets = sorted({c["budget"] for c in cells})
columns = [("mni-regions-2d", b) for b in budgets]
write_csv(cells, dest / "results.csv")
plot_label_efficiency(stats, methods, ["mni-regions-2d"], dest / "label_efficiency.png")
lines = ["## Test Dice (%), mean ± std over seeds 0, 1, 2", "", DICE_NOTE, "", *dice_table(stats, methods, columns), ""]
# validation Dice (what any choice may look at)
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
lines += [
    "",
    "## Pretraining",
    "",
    "| method | steps | minutes (contended) | final loss | held-out EPE (px) |",
    "|---|---|---|---|---|",
]
for m in methods[1:]:
    d = pre[m]
    epe = f"{d['epe']:.2f} (zero field {d['epe_zero']:.2f})" if d.get("epe") is not None else "–"
    lines.append(f"| {m} | {d['steps']} | {d['seconds'] / 60:.1f} | {d['final_loss']:.4f} | {epe} |")
lines += [
    "",
    "## Feature geometry on the 20 test pseudo-subjects (`cover analyze`)",
    "",
    *analysis_table(analyses, methods),
    "",
]
lines += ["| backbone | random pixel-pair cosine | effective rank | collapsed |", "|---|---|---|---|"]
for m in methods:
    a = analyses.get(m)
    if a:
        lines.append(f"| {m} | {a['pair_cos']:.3f} | {a['eff_rank']:.1f} | {a['collapsed']} |")
(dest / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
