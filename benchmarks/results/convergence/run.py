"""One long fine-tuning cell of the convergence study (benchmarks/results/convergence/README.md).

The cell is the ``default`` benchmark preset's ``mni-regions-2d`` cell (same data, split, recipe
and backbone) with the learning rate constant after a fixed 15-step warm-up, validation every 20
steps, patience 16 validations and a 2,000-step cap. Because the learning rates do not depend on
the cap and validating changes nothing in training, every shorter setting (validation every 20 or
40 steps, patience P, cap C) is a prefix of this run: ``simulate.py`` replays it on the logged
validation curve. The network of every validation is kept, so the test Dice of any setting's
selected step can be measured; the ones no candidate setting selects are deleted afterwards.

``--extend`` continues a finished cell with ``LONG``'s (larger) patience: it resumes from the
cell's second-newest training-state checkpoint (one validation before the early stop; the
newest one is marked as stopped, and a resumed stopped run trains no step), so the 20 steps up
to the old stop are trained again and the log's overlap checks that the resumed run retraces the
old one (``check_overlap``).

usage: python run.py ROOT METHOD N SEED [--extend] [--patience P --cap C]   (ROOT: a benchmark
folder holding ``pretrain/cover-2d`` from the default preset; writes ROOT/convergence/METHOD/nN-seedS;
``--patience``/``--cap`` replace ``LONG``'s, e.g. ``--extend --patience 64 --cap 4000``)
"""

import csv
import json
import shutil
import sys
from pathlib import Path

from cover.benchmarking.config import finetune_values, resolve_benchmark_config
from cover.benchmarking.tasks import task_data
from cover.config import to_dict
from cover.downstream import finetune_task
from cover.downstream.evaluate import evaluate
from cover.downstream.finetune import finetune
from cover.models.networks import save_finetuned

#: What the long run changes in the default preset's fine-tuning.
LONG = {"lr_schedule": "constant", "warmup_steps": 15, "val_every": 20, "patience": 32, "steps": 2000}


def cell_values(config, task, data, budget: int, seed: int) -> dict:
    """The benchmark's cell settings (``cover.benchmarking.config.finetune_values``) with ``LONG``."""
    return {**finetune_values(config, task, data, budget, seed), **LONG}


def keep_every_validation() -> None:
    """Save the network of every validation as ``OUT/steps/step_N.pt`` (a fine-tuned checkpoint)."""
    original = finetune_task.FinetuneTask.validate

    def validate(self, step):
        result = original(self, step)
        values = {**self.validation.metadata, "step": step}
        save_finetuned(self.validation.out / "steps" / f"step_{step}.pt", self.network, values, to_dict(self.config))
        return result

    finetune_task.FinetuneTask.validate = validate


def check_overlap(old_rows: list[dict], log_csv: Path, since: int) -> int:
    """Raise unless the resumed log repeats the old log's rows after step ``since`` exactly; their count."""
    with open(log_csv) as stream:
        new = {row["step"]: row for row in csv.DictReader(stream)}
    compared = 0
    for row in old_rows:
        if int(row["step"]) <= since:
            continue
        again = new[row["step"]]
        for key in ("loss", "lr", "val_dice"):
            if row[key] != again[key]:
                raise SystemExit(f"step {row['step']}: {key} {row[key]} before, {again[key]} resumed")
        compared += 1
    return compared


def main(root: str, method: str, budget: str, seed: str, extend: bool = False) -> None:
    root_path = Path(root)
    config = resolve_benchmark_config(preset="default", out=root, device="cpu")
    task = config.task_configs()[0]
    data = task_data(task, root_path / "data")
    values = cell_values(config, task, data, int(budget), int(seed))
    out = root_path / "convergence" / method / f"n{budget}-seed{seed}"
    (out / "steps").mkdir(parents=True, exist_ok=True)
    pretrained = None
    if method != "scratch":  # the finished pretraining's checkpoint, else the newest one of a stopped run
        record = json.loads((root_path / "cells" / f"pretrain__{method}__2d.json").read_text())
        found = sorted((root_path / "pretrain" / f"{method}-2d" / "checkpoints").glob("step_*.pt"))
        pretrained = str(root_path / record["checkpoint"]) if record["status"] == "done" else str(found[-1])
    keep_every_validation()
    tests, extended = {}, {}
    if extend:
        previous = json.loads((out / "cell.json").read_text())
        tests = {int(step): dice for step, dice in previous["test_dice_at_step"].items()}
        start = sorted((out / "checkpoints").glob("step_*.pt"))[-2]
        with open(out / "log.csv") as stream:
            old_rows = list(csv.DictReader(stream))
        extended = {"from_patience": previous["settings"]["patience"], "resumed_from": start.name}
        extended["previous_summary"] = previous["summary"]
        summary = finetune(values, pretrained=pretrained, out=str(out), resume=str(start), device="cpu")
        extended["rows_retraced"] = check_overlap(old_rows, out / "log.csv", summary["start_step"])
    else:
        summary = finetune(values, pretrained=pretrained, out=str(out), overwrite=True, device="cpu")
    from simulate import CANDIDATES, curve, replay  # noqa: PLC0415 (beside this file)

    steps, scores = curve(out / "log.csv")
    needed = {replay(steps, scores, *c)["best_step"] for c in CANDIDATES} | {summary["best_step"]}
    for step in sorted(needed - set(tests)):
        result = evaluate(
            out / "steps" / f"step_{step}.pt", images=data["test_images"], labels=data["test_labels"],
            out=out / "test" / f"step_{step}", device="cpu", overwrite=True, figure_cases=0,
        )  # fmt: skip
        tests[step] = result["mean_dice"]
    shutil.rmtree(out / "steps")
    record = {"method": method, "budget": int(budget), "seed": int(seed), "settings": values, "summary": summary}
    record["test_dice_at_step"] = {step: tests[step] for step in sorted(tests)}
    if extend:
        record["extended"] = extended
    (out / "cell.json").write_text(json.dumps(record, indent=2, default=str))


def _options(arguments: list[str]) -> list[str]:
    """Apply ``--patience P`` and ``--cap C`` to ``LONG``; the remaining arguments."""
    for flag, key in (("--patience", "patience"), ("--cap", "steps")):
        if flag in arguments:
            at = arguments.index(flag)
            LONG[key] = int(arguments[at + 1])
            del arguments[at : at + 2]
    return arguments


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    arguments = _options([a for a in sys.argv[1:] if a != "--extend"])
    main(*arguments, extend="--extend" in sys.argv[1:])
