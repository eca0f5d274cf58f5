"""Replay early stopping on the logged validation curves of the long convergence cells; write table.md.

A setting (validation every ``k`` steps, patience ``P`` validations, cap ``C`` steps) is replayed
on a long run's ``log.csv`` (validation every 20 steps, constant learning rate after the warm-up,
so any shorter run with the same seed follows it step for step): the validations at multiples of
``k`` up to ``C`` and at ``C`` itself, best = first strictly highest validation Dice, stop after
``P`` validations without a higher one (the rule of ``cover.downstream.finetune_task``).

usage: python simulate.py DIR   (DIR/cells/METHOD-nN-seedS/{log.csv,cell.json}, as collect.sh copies them;
writes DIR/table.md)
"""

import csv
import json
import math
import statistics
import sys
from pathlib import Path

#: (k, P, C) pairs compared: each setting, then the same with double the patience span (and cap).
PAIRS = [
    ((20, 4, 1000), (20, 8, 2000)),
    ((20, 8, 1000), (20, 16, 2000)),
    ((40, 4, 1000), (40, 8, 2000)),
    ((20, 16, 2000), (20, 32, 2000)),
    ((40, 8, 2000), (40, 16, 2000)),
    ((20, 32, 4000), (20, 64, 4000)),
    ((40, 16, 4000), (40, 32, 4000)),
]
CANDIDATES = sorted({c for pair in PAIRS for c in pair})
#: The table's columns: every setting once, in the order of ``PAIRS``.
COLUMNS = list(dict.fromkeys(c for pair in PAIRS for c in pair))


def curve(log_csv: Path) -> tuple[list[int], list[float]]:
    """Steps and validation Dice of a run's ``log.csv`` (rows with a validation only)."""
    with open(log_csv) as stream:
        rows = [r for r in csv.DictReader(stream) if r.get("val_dice") not in (None, "")]
    return [int(r["step"]) for r in rows], [float(r["val_dice"]) for r in rows]


def replay(steps: list[int], scores: list[float], k: int, patience: int, cap: int) -> dict:
    """Best step, its validation Dice, stop step and what stopped a run with these settings.

    ``stopped_by`` is ``patience``, ``cap``, or ``beyond`` when the log ends before the
    setting would have stopped (the long run was too short to replay it).
    """
    best, best_step, stale = -math.inf, 0, 0
    for step, score in zip(steps, scores, strict=True):
        if step > cap:
            break
        if step % k and step != cap:
            continue
        if math.isnan(score):
            continue
        if score > best:
            best, best_step, stale = score, step, 0
        else:
            stale += 1
        if stale >= patience:
            return {"best_step": best_step, "val": best, "stop": step, "stopped_by": "patience"}
        if step == cap:
            return {"best_step": best_step, "val": best, "stop": step, "stopped_by": "cap"}
    return {"best_step": best_step, "val": best, "stop": steps[-1], "stopped_by": "beyond"}


def _cells(root: Path) -> list[dict]:
    cells = []
    for path in sorted(root.glob("cells/*/cell.json")):
        record = json.loads(path.read_text())
        record["curve"] = curve(path.parent / "log.csv")
        cells.append(record)
    return sorted(cells, key=lambda c: (c["budget"], c["method"], c["seed"]))


def _name(setting: tuple[int, int, int]) -> str:
    return f"k={setting[0]}, P={setting[1]}, C={setting[2]}"


def _test(cell: dict, step: int) -> float:
    return cell["test_dice_at_step"].get(str(step), math.nan)


def table(cells: list[dict]) -> list[str]:
    """Markdown: per cell, the long run and each pair's selected step / validation / test Dice."""
    head = ["method", "n", "seed", "long run: best step / stop (by)"]
    head += [f"{_name(setting)}: step, val, test" for setting in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        summary = cell["summary"]
        row = [cell["method"], str(cell["budget"]), str(cell["seed"])]
        row.append(f"{summary['best_step']} / {summary['steps']} ({summary.get('stopped_by', '?')})")
        for setting in COLUMNS:
            r = replay(*cell["curve"], *setting)
            row.append(
                f"{r['best_step']} ({r['stopped_by']} at {r['stop']}), {100 * r['val']:.1f}, "
                f"{100 * _test(cell, r['best_step']):.1f}"
            )
        lines.append("| " + " | ".join(row) + " |")
    return lines


def differences(cells: list[dict]) -> list[str]:
    """Per pair: changes of the selected validation / test Dice when patience and cap double."""
    lines = [
        "| setting -> doubled | cells | cells whose selected step changes | mean / max change of val Dice "
        "(points) | mean / max |change| of test Dice (points) | cells stopped by the cap | beyond the log |",
        "|---|---|---|---|---|---|---|",
    ]
    for short, long in PAIRS:
        a = [replay(*c["curve"], *short) for c in cells]
        b = [replay(*c["curve"], *long) for c in cells]
        changed = sum(x["best_step"] != y["best_step"] for x, y in zip(a, b, strict=True))
        dv = [100 * (y["val"] - x["val"]) for x, y in zip(a, b, strict=True)]
        dt = [
            100 * abs(_test(c, y["best_step"]) - _test(c, x["best_step"])) for c, x, y in zip(cells, a, b, strict=True)
        ]
        cap = sum(r["stopped_by"] == "cap" for r in a + b)
        beyond = sum(r["stopped_by"] == "beyond" for r in a + b)
        lines.append(
            f"| {_name(short)} -> {_name(long)} | {len(cells)} | {changed} | {statistics.mean(dv):.2f} / "
            f"{max(dv):.2f} | {statistics.mean(dt):.2f} / {max(dt):.2f} | {cap} | {beyond} |"
        )
    return lines


def main(root: str) -> None:
    cells = _cells(Path(root))
    lines = ["## Selected checkpoint per cell and setting", "", *table(cells), "", "## Doubling patience and cap", ""]
    lines += differences(cells)
    text = "\n".join(lines) + "\n"
    (Path(root) / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
