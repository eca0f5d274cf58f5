"""Crash safety and scale-out of fine-tuning: exact resume after SIGKILL/SIGTERM, corrupt
checkpoints, non-finite steps, output-folder protection, and DDP with two gloo processes.

The subprocess tests run the real ``python -m cover finetune`` (tiny U-Net, 32x32 crops of
the synthetic shapes task) and compare ``log.csv`` of interrupted-then-resumed runs with an
uninterrupted run of the same seed: batches and augmentations are functions of
``(seed, step)``, so every resumed loss and validation score must match to 1e-6.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import cover.downstream.finetune as finetune_module
import cover.engine.loop as loop_module
from _support.clock import SteppingTime
from _support.processes import (
    ENV,
    act_when_written,
    finish,
    interruption_line,
    kill,
    resume_command,
    start,
    terminate_group,
)
from cover.downstream.finetune import CHECKPOINT_FORMAT, finetune
from cover.engine.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from cover.engine.distributed import state_digest
from cover.engine.logger import read_log
from cover.errors import ConfigError, CoverError

TINY = {"channels": [8, 16, 32, 16, 8]}
STEPS = 12


def columns(out: Path) -> dict[str, dict[int, float]]:
    """``log.csv`` as column -> step -> value."""
    log = read_log(out / "log.csv")
    steps = [int(s) for s in log["step"]]
    with (out / "log.csv").open() as stream:
        header = stream.readline().strip().split(",")
        rows = [line.strip().split(",") for line in stream]
    table: dict[str, dict[int, float]] = {name: {} for name in header[1:]}
    for row in rows:
        for name, value in zip(header[1:], row[1:], strict=True):
            if value != "":
                table[name][int(row[0])] = float(value)
    assert sorted(table["loss"]) == steps
    return table


def _command(tmp: Path, data: tuple[str, str], out: Path, *extra: str) -> list[str]:
    config = tmp / "tiny.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump({"model": TINY, "log_every": 1, "keep_checkpoints": 10}))
    return [
        sys.executable, "-m", "cover", "finetune", "--config", str(config), "--images", data[0],
        "--labels", data[1], "--dim", "2", "--size", "32", "--batch-size", "4", "--steps", str(STEPS),
        "--lr", "1e-2", "--val-every", "3", "--checkpoint-every", "2", "--seed", "3", "--device", "cpu",
        "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def interrupted_runs(seg2d, tmp_path_factory):
    """An uninterrupted run, one killed by SIGKILL and one stopped by SIGTERM, each resumed."""
    tmp = tmp_path_factory.mktemp("ft_signals")
    full, killed, termed = tmp / "full", tmp / "killed", tmp / "termed"
    reference = start(_command(tmp, seg2d, full), tmp)
    kill_run = start(_command(tmp, seg2d, killed), tmp)
    term_run = start(_command(tmp, seg2d, termed), tmp)
    act_when_written(
        {
            "term": (checkpoint_path(termed, 2), term_run, terminate_group(term_run)),
            "kill": (checkpoint_path(killed, 4), kill_run, kill(kill_run)),
        }
    )
    kill_rc, _ = finish(kill_run)
    term_rc, term_err = finish(term_run)
    killed_steps = max(columns(killed)["loss"])
    termed_checkpoints = [p.name for p in list_checkpoints(termed)]
    kill_resume = start(_command(tmp, seg2d, killed, "--resume", "auto"), tmp)
    hint = interruption_line(term_err)
    term_resume = start(resume_command(hint), tmp)
    ref_rc, ref_err = finish(reference)
    assert ref_rc == 0, ref_err
    return {
        "full": full,
        "killed": killed,
        "termed": termed,
        "kill_rc": kill_rc,
        "killed_steps": killed_steps,
        "term_rc": term_rc,
        "term_err": term_err,
        "term_hint": hint,
        "termed_checkpoints": termed_checkpoints,
        "kill_resume": finish(kill_resume),
        "term_resume": finish(term_resume),
    }


def assert_same_run(resumed: Path, reference: Path) -> None:
    """Equal losses and validation scores at every step, and equal final weights."""
    got, want = columns(resumed), columns(reference)
    assert sorted(got["loss"]) == list(range(1, STEPS + 1))
    for name in ("loss", "val_dice"):
        assert sorted(got[name]) == sorted(want[name]), name
        np.testing.assert_allclose(list(got[name].values()), list(want[name].values()), rtol=0, atol=1e-6)
    a = torch.load(resumed / "last.pt", weights_only=True)["model"]
    b = torch.load(reference / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["start_step"] > 0


def test_sigkill_then_resume_auto_matches_uninterrupted_run(interrupted_runs):
    runs = interrupted_runs
    assert runs["kill_rc"] == -signal.SIGKILL
    assert runs["killed_steps"] < STEPS, "the run finished before it was killed"
    rc, err = runs["kill_resume"]
    assert rc == 0, err
    assert "Traceback" not in err and "resuming from" in err
    assert int(err.split("at step ")[1].split()[0]) >= 4
    assert_same_run(runs["killed"], runs["full"])


def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(interrupted_runs):
    runs = interrupted_runs
    assert runs["term_rc"] == 130, runs["term_err"]
    assert "Traceback" not in runs["term_err"]
    assert f"cover finetune --out {runs['termed']} --resume auto" in runs["term_hint"]
    stopped = int(runs["term_hint"].split("interrupted at step ")[1].split(";")[0])
    assert 2 <= stopped < STEPS
    assert runs["termed_checkpoints"][-1] == f"step_{stopped:08d}.pt"
    rc, err = runs["term_resume"]  # the exact command the message printed
    assert rc == 0, err
    assert f"resuming from {checkpoint_path(runs['termed'], stopped)} at step {stopped}" in err
    assert_same_run(runs["termed"], runs["full"])


# ------------------------------------------------------------------------------ in-process runs


def tiny(seg2d, out: Path, **extra) -> dict:
    options = {
        "images": seg2d[0],
        "labels": seg2d[1],
        "dim": 2,
        "size": 32,
        "batch_size": 4,
        "steps": 6,
        "lr": 1e-2,
        "val_every": 3,
        "checkpoint_every": 2,
        "keep_checkpoints": 10,
        "log_every": 1,
        "seed": 5,
        "device": "cpu",
        "model": TINY,
        "out": str(out),
    }
    options.update(extra)
    return options


def test_checkpoints_hold_the_training_state_as_plain_values(seg2d, tmp_path):
    summary = finetune(**tiny(seg2d, tmp_path / "run"))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [f"step_{s:08d}.pt" for s in (2, 4, 6)]
    state = load_checkpoint(checkpoint_path(tmp_path / "run", 6))
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == 6
    assert {"model", "optimizer", "scheduler", "rng", "progress", "config", "metadata"} <= set(state)
    assert len(state["progress"]["history"]) == 6 and state["progress"]["best_step"] == summary["best_step"]
    assert json.loads(json.dumps(state["config"])) == state["config"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert state_digest(state["model"]) == state_digest(last)


def test_log_seconds_continue_after_a_resume(seg2d, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(loop_module, "time", SteppingTime())
    finetune(**tiny(seg2d, run))
    checkpoint_path(run, 6).unlink()  # as if killed after step 4's checkpoint
    monkeypatch.setattr(loop_module, "time", SteppingTime())  # a new process: its clock restarts
    finetune(out=str(run), resume="auto")
    seconds = columns(run)["seconds"]
    assert sorted(seconds) == [1, 2, 3, 4, 5, 6]
    values = [seconds[s] for s in sorted(seconds)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    stored = load_checkpoint(checkpoint_path(run, 4))["progress"]["seconds"]
    assert seconds[4] < stored < seconds[5]


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_truncated_newest_checkpoint_falls_back_to_the_previous(seg2d, tmp_path, caplog, amp):
    run = tmp_path / "run"
    finetune(**tiny(seg2d, run, amp=amp))
    reference = columns(run)
    newest = checkpoint_path(run, 6)
    newest.write_bytes(newest.read_bytes()[:1000])  # a save that was cut short
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"), caplog.at_level(logging.INFO, "cover"):
        summary = finetune(out=str(run), resume="auto")
    assert f"resuming from {checkpoint_path(run, 4)} at step 4" in [r.getMessage() for r in caplog.records]
    assert summary["start_step"] == 4 and summary["steps"] == 6
    np.testing.assert_allclose(list(columns(run)["loss"].values()), list(reference["loss"].values()), rtol=0, atol=1e-6)


def test_refuses_another_run_folder_and_offers_resume(seg2d, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="pass --resume auto to continue it"):
        finetune(**tiny(seg2d, out))
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="not a cover finetune training checkpoint"):
        torch.save({"model": {}, "format": "cover-checkpoint/1"}, tmp_path / "pretrain.pt")
        finetune(**tiny(seg2d, tmp_path / "other", resume=str(tmp_path / "pretrain.pt")))


def _inject_nonfinite(monkeypatch, bad_steps: set[int]) -> None:
    """The training loss of the given 1-based steps is NaN (validation is unaffected)."""
    original = finetune_module.DiceCELoss

    class Poisoned(original):
        calls = 0

        def forward(self, logits, target):
            Poisoned.calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if Poisoned.calls in bad_steps else loss

    monkeypatch.setattr(finetune_module, "DiceCELoss", Poisoned)


def test_nonfinite_steps_are_skipped_and_counted(seg2d, tmp_path, monkeypatch, caplog):
    _inject_nonfinite(monkeypatch, {2, 3})
    summary = finetune(**tiny(seg2d, tmp_path / "run"))
    assert summary["nonfinite_steps"] == 2 and summary["steps"] == 6
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("step 2: non-finite loss or gradient, step skipped (1 in a row") for m in warned)
    assert any(m.startswith("step 3: non-finite loss or gradient, step skipped (2 in a row") for m in warned)
    assert np.isfinite(summary["final_loss"])
    network = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in network.values())


def test_consecutive_nonfinite_steps_abort_and_keep_the_last_good_checkpoint(seg2d, tmp_path, monkeypatch):
    _inject_nonfinite(monkeypatch, set(range(3, 20)))
    with pytest.raises(CoverError, match="aborting at step 5: 3 consecutive non-finite steps"):
        finetune(**tiny(seg2d, tmp_path / "run", max_nonfinite_steps=3))
    # Skipped steps leave the weights alone, so every checkpoint written is a good one.
    saved = list_checkpoints(tmp_path / "run")
    assert [p.name for p in saved] == ["step_00000002.pt", "step_00000004.pt"]
    for path in saved:
        assert all(torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values())


# ----------------------------------------------------------------------------------------- DDP


@pytest.fixture(scope="module")
def ddp_run(seg2d, tmp_path_factory):
    """``cover finetune --devices 2`` (torchrun, gloo on CPU), 4 steps of a global batch of 4."""
    root = tmp_path_factory.mktemp("ft_ddp")
    (root / "tiny.yaml").write_text(yaml.safe_dump({"model": TINY, "log_every": 1}))
    out = root / "run"
    command = [
        sys.executable, "-m", "cover", "finetune", "--devices", "2", "--config", str(root / "tiny.yaml"),
        "--images", seg2d[0], "--labels", seg2d[1], "--dim", "2", "--size", "32", "--batch-size", "4",
        "--steps", "4", "--val-every", "2", "--lr", "1e-2", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result.stderr


def test_two_gloo_processes_fine_tune_identical_replicas(ddp_run):
    out, stderr = ddp_run
    assert "processes=2" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    digests = summary["parameter_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], digests
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002.pt", "step_00000004.pt"]
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    assert state_digest(last) == digests[0]
    log = columns(out)
    assert sorted(log["loss"]) == [1, 2, 3, 4] and sorted(log["val_dice"]) == [2, 4]


def test_ddp_run_resumes_with_one_process(ddp_run, tmp_path):
    out, _ = ddp_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    summary = finetune(out=str(resumed), resume="auto", steps=6, device="cpu")
    assert summary["start_step"] == 4 and summary["processes"] == 1 and summary["steps"] == 6
    log = columns(resumed)
    assert sorted(log["loss"]) == [1, 2, 3, 4, 5, 6]
    assert [log["loss"][s] for s in (1, 2, 3, 4)] == [columns(out)["loss"][s] for s in (1, 2, 3, 4)]
