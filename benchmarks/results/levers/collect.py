"""Collect the stop-15 lever experiments' finished cells into one CSV (run after they finish).

Usage: python collect.py OUT_ROOT DEST_CSV   (OUT_ROOT holds one benchmark output folder per experiment)
"""

import csv
import json
import sys
from pathlib import Path

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
fields = ["experiment", "method", "budget", "seed", "val_dice", "dice", "hd95", "steps", "tested_step"]
rows = []
for folder in sorted(p for p in root.iterdir() if (p / "cells").is_dir()):
    for f in sorted((folder / "cells").glob("mni-regions-2d__*.json")):
        cell = json.loads(f.read_text())
        if cell.get("status") == "done":
            rows.append({"experiment": folder.name, **{k: cell[k] for k in fields[1:]}})
with dest.open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
print(f"{len(rows)} cells -> {dest}")
