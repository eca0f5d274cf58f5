"""Collect the fine-tuning-protocol cells (stop 14) into one Markdown table (throwaway helper)."""

import glob
import json
import os

rows = []
base = {
    "cover": "/tmp/prot/r300vic/cells",
    "scratch": "/tmp/prot/r300/cells",
    "dense-infonce": "/tmp/prot/r300/cells",
    "simclr": "/tmp/prot/r300/cells",
}
for m, d in base.items():
    for f in sorted(glob.glob(f"{d}/mni-regions-2d__{m}__n*__seed*.json")):
        c = json.load(open(f))
        if c.get("status") != "done":
            continue
        cell = (c["budget"], c["seed"], c["val_dice"], c["dice"], c["tested_step"], c["steps"])
        rows.append((m, "base (old cell)", *cell))
for f in sorted(glob.glob("/tmp/ftproto/runs/*/*/n*-seed*/summary.json")):
    parts = f.split("/")
    m, tag, cell = parts[-4], parts[-3], parts[-2]
    s = json.load(open(f))
    t = os.path.join(os.path.dirname(f), "test/metrics.json")
    test = json.load(open(t))["mean_dice"] if os.path.exists(t) else float("nan")
    n, seed = cell[1:].split("-seed")
    rows.append((m, tag, int(n), int(seed), s["best_val_dice"], test, s["best_step"], s["steps"]))
rows.sort(key=lambda r: (r[2], r[0], r[1], r[3]))
print("| method | option | n | seed | val Dice | test Dice | best step / steps run |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r[2] > 2:
        continue
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {100 * r[4]:.1f} | {100 * r[5]:.1f} | {r[6]}/{r[7]} |")
