"""Early stopping and the step cap of fine-tuning, on scripted validation scores.

``validation_score`` is replaced by a scripted sequence, so the step at which patience runs
out, the best step and what ended the run are known exactly.
"""

import json
import logging

import pytest

import cover.downstream.finetune_task as task_module
from cover.downstream.finetune import finetune
from cover.engine.logger import read_log

TINY = {"channels": [8, 16, 32, 16, 8]}


def script(monkeypatch, scores):
    """Make the i-th validation return ``scores[i]``; return the list of validated steps."""
    calls = []

    def scripted(*args, **kwargs):
        score = scores[len(calls)]
        calls.append(score)
        return {"score": score, "val_dice": score}

    monkeypatch.setattr(task_module, "validation_score", scripted)
    return calls


def run(seg2d, out, **extra):
    options = {
        "images": seg2d[0], "labels": seg2d[1], "dim": 2, "size": 32, "batch_size": 2, "lr": 1e-2,
        "model": TINY, "out": str(out), "device": "cpu", "log_every": 1,
    }  # fmt: skip
    return finetune(**{**options, **extra})


def test_patience_stops_at_the_exact_validation_and_keeps_the_best_step(seg2d, tmp_path, monkeypatch, caplog):
    # Validations at steps 2, 4, ...: 0.6 at step 8 resets the count, the tie at step 10 does not
    # improve, so the second stale validation (step 12) stops the run; the best stays step 8.
    calls = script(monkeypatch, [0.3, 0.5, 0.4, 0.6, 0.6, 0.58, 0.9, 0.9])
    with caplog.at_level(logging.WARNING, logger="cover"):
        summary = run(seg2d, tmp_path / "run", steps=40, val_every=2, patience=2)
    assert len(calls) == 6
    assert summary["steps"] == 12 and summary["stopped_by"] == "patience"
    assert summary["best_step"] == 8 and summary["best_val_dice"] == 0.6
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_by"] == "patience"
    assert not [r for r in caplog.records if "step cap" in r.getMessage()]


def test_a_run_that_reaches_the_cap_is_recorded_as_cap_and_warns(seg2d, tmp_path, monkeypatch, caplog):
    # Validations at steps 4, 8 and the last step 10: one stale validation, patience 2 never runs out.
    calls = script(monkeypatch, [0.2, 0.5, 0.45])
    with caplog.at_level(logging.WARNING, logger="cover"):
        summary = run(seg2d, tmp_path / "run", steps=10, val_every=4, patience=2)
    assert len(calls) == 3
    assert summary["steps"] == 10 and summary["stopped_by"] == "cap" and summary["best_step"] == 8
    (line,) = [r.getMessage() for r in caplog.records if "step cap" in r.getMessage()]
    assert "steps: 10" in line and "(step 8)" in line


def test_a_run_without_patience_ran_its_steps(seg2d, tmp_path, monkeypatch):
    script(monkeypatch, [0.2, 0.1, 0.1])
    summary = run(seg2d, tmp_path / "run", steps=6, val_every=2)
    assert summary["stopped_by"] == "steps" and summary["best_step"] == 2


def test_a_stopped_run_resumed_with_more_patience_trains_on_as_if_it_had_had_it(seg2d, tmp_path, monkeypatch):
    # Patience 2 stops at step 12 (as above); resumed from that state with patience 4 the stale
    # count goes on (3 at step 14), 0.95 at step 16 resets it, four stale ones stop at step 24:
    # the run that had patience 4 from the start, validation for validation and loss for loss.
    first, then = [0.3, 0.5, 0.4, 0.6, 0.6, 0.58], [0.5, 0.95, 0.3, 0.3, 0.3, 0.3]
    script(monkeypatch, first)
    assert run(seg2d, tmp_path / "run", steps=40, val_every=2, patience=2)["steps"] == 12
    script(monkeypatch, [])
    again = run(seg2d, tmp_path / "run", resume="auto")  # the same patience: nothing left to train
    assert again["steps"] == 12 and again["stopped_by"] == "patience"
    calls = script(monkeypatch, then)
    resumed = run(seg2d, tmp_path / "run", resume="auto", patience=4)
    assert len(calls) == 6 and resumed["start_step"] == 12
    assert (resumed["steps"], resumed["best_step"], resumed["stopped_by"]) == (24, 16, "patience")
    script(monkeypatch, first + then)
    whole = run(seg2d, tmp_path / "whole", steps=40, val_every=2, patience=4)
    assert (whole["steps"], whole["best_step"]) == (24, 16)
    log, reference = read_log(tmp_path / "run" / "log.csv"), read_log(tmp_path / "whole" / "log.csv")
    assert log["step"] == list(range(1, 25)) and log["loss"] == reference["loss"]
    assert log["val_dice"] == reference["val_dice"]


def test_constant_schedule_makes_a_shorter_cap_a_prefix_of_a_longer_run(seg2d, tmp_path):
    """With ``lr_schedule: constant`` the cap changes nothing before it: the same seed gives the
    same learning rates and losses step for step (the convergence study's replay rests on this);
    under cosine the cap reshapes the rates from the first step after the warm-up."""
    logs = {}
    for name, steps, schedule in (("short", 5, "constant"), ("long", 9, "constant"), ("cosine", 9, "cosine")):
        run(seg2d, tmp_path / name, steps=steps, val_every=100, warmup_steps=2, lr_schedule=schedule)
        logs[name] = read_log(tmp_path / name / "log.csv")
    short, long, cosine = logs["short"], logs["long"], logs["cosine"]
    assert [float(v) for v in long["lr"]] == pytest.approx([1e-2] * 9)  # logged after the step: warmed up
    assert short["loss"] == long["loss"][:5] and short["lr"] == long["lr"][:5]
    assert float(cosine["lr"][4]) < 1e-2 and cosine["loss"][:3] == long["loss"][:3]
