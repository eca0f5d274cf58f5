"""Crash safety of pretraining: exact resume after SIGKILL/SIGTERM, corrupt checkpoints,
non-finite steps, full disks, checkpoint timing and output-folder protection.

The subprocess tests run the real ``python -m cover pretrain`` (tiny U-Net, 32x32 crops,
batch 2, one DataLoader worker) and compare ``log.csv`` of interrupted-then-resumed runs with
an uninterrupted run of the same seed. Batches are a function of ``(seed, step)`` only, so the
resumed losses must match to 1e-6.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import cover.engine.checkpoint as checkpoint_module
from _support.processes import act_when_written, finish, interruption_line, kill, resume_command, start, terminate_group
from cover.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from cover.engine.logger import read_log
from cover.errors import CoverError, TrainingInterrupted
from cover.methods.cover import CoverMethod
from cover.pretraining.pretrain import pretrain

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
STEPS = 10


def tiny(out: Path, **extra) -> dict:
    """Options of a tiny, fast 2D run on the demo data."""
    options = {
        "out": str(out),
        "dim": 2,
        "size": 32,
        "batch_size": 2,
        "steps": 6,
        "lr": 3e-3,
        "warmup_steps": 2,
        "log_every": 1,
        "eval_pairs": 4,
        "checkpoint_every": 2,
        "keep_checkpoints": 10,
        "device": "cpu",
        "model": TINY_MODEL,
    }
    options.update(extra)
    return options


def model_states_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


def losses(out: Path) -> dict[int, float]:
    log = read_log(out / "log.csv")
    return dict(zip((int(s) for s in log["step"]), log["loss"], strict=True))


# ----------------------------------------------------------------- real processes, real signals


def _command(tmp: Path, out: Path, *extra: str) -> list[str]:
    config = tmp / "tiny.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump({"model": TINY_MODEL, "log_every": 1, "eval_pairs": 4, "warmup_steps": 2}))
    return [
        sys.executable, "-m", "cover", "pretrain", "--config", str(config), "--size", "32",
        "--batch-size", "2", "--steps", str(STEPS), "--checkpoint-every", "2", "--lr", "3e-3",
        "--seed", "3", "--device", "cpu", "--num-workers", "1", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory):
    """An uninterrupted run, a run killed by SIGKILL and one stopped by SIGTERM, each resumed.

    The three first runs go concurrently, then the two resumes, to save wall-clock time.
    """
    tmp = tmp_path_factory.mktemp("signals")
    full, killed, termed = tmp / "full", tmp / "killed", tmp / "termed"
    reference = start(_command(tmp, full), tmp)
    kill_run = start(_command(tmp, killed), tmp)
    term_run = start(_command(tmp, termed), tmp)

    # SIGTERM to the process group (main process and its DataLoader worker, as a scheduler
    # sends it) after the first checkpoint; SIGKILL to the main process after the second.
    act_when_written(
        {
            "term": (checkpoint_path(termed, 2), term_run, terminate_group(term_run)),
            "kill": (checkpoint_path(killed, 4), kill_run, kill(kill_run)),
        }
    )
    kill_rc, _ = finish(kill_run)
    term_rc, term_err = finish(term_run)
    killed_log = losses(killed)
    killed_checkpoints = [p.name for p in list_checkpoints(killed)]
    termed_checkpoints = [p.name for p in list_checkpoints(termed)]
    termed_log = losses(termed)

    kill_resume = start(_command(tmp, killed, "--resume", "auto"), tmp)
    hint = interruption_line(term_err)
    term_resume = start(resume_command(hint), tmp)
    ref_rc, ref_err = finish(reference)
    assert ref_rc == 0, ref_err
    return {
        "full": full,
        "killed": killed,
        "termed": termed,
        "kill_rc": kill_rc,
        "killed_log": killed_log,
        "killed_checkpoints": killed_checkpoints,
        "term_rc": term_rc,
        "term_err": term_err,
        "term_hint": hint,
        "termed_log": termed_log,
        "termed_checkpoints": termed_checkpoints,
        "kill_resume": finish(kill_resume),
        "term_resume": finish(term_resume),
    }


def test_sigkill_then_resume_auto_matches_uninterrupted_run(interrupted_runs):
    runs = interrupted_runs
    assert runs["kill_rc"] == -signal.SIGKILL
    assert max(runs["killed_log"]) < STEPS, "the run finished before it was killed"
    assert "step_00000004.pt" in runs["killed_checkpoints"]
    rc, err = runs["kill_resume"]
    assert rc == 0, err
    assert "Traceback" not in err
    resumed_from = int(err.split("at step ")[1].split()[0])
    assert resumed_from >= 4
    reference, resumed = losses(runs["full"]), losses(runs["killed"])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    later = [s for s in resumed if s > resumed_from]
    assert later, "nothing was resumed"
    np.testing.assert_allclose([resumed[s] for s in later], [reference[s] for s in later], rtol=0, atol=1e-6)
    np.testing.assert_allclose(list(resumed.values()), list(reference.values()), rtol=0, atol=1e-6)
    a = load_checkpoint(checkpoint_path(runs["full"], STEPS))
    b = load_checkpoint(checkpoint_path(runs["killed"], STEPS))
    assert model_states_equal(a["model"], b["model"], atol=1e-6)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the global RNG continues too


def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(interrupted_runs):
    runs = interrupted_runs
    assert runs["term_rc"] == 130, runs["term_err"]
    assert "Traceback" not in runs["term_err"]
    lines = [line for line in runs["term_err"].splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0].startswith("interrupted at step ")
    assert f"--out {runs['termed']} --resume auto" in runs["term_hint"]
    stopped = int(runs["term_hint"].split("interrupted at step ")[1].split(";")[0])
    # The checkpoint is at the step it finished: the last logged one, not an earlier multiple of 2.
    assert stopped == max(runs["termed_log"]) < STEPS
    assert runs["termed_checkpoints"][-1] == f"step_{stopped:08d}.pt"
    rc, err = runs["term_resume"]  # the exact command the message printed
    assert rc == 0, err
    assert f"resuming from {checkpoint_path(runs['termed'], stopped)} at step {stopped}" in err
    reference, resumed = losses(runs["full"]), losses(runs["termed"])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    np.testing.assert_allclose(list(resumed.values()), list(reference.values()), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ in-process runs


@pytest.fixture(scope="module", autouse=True)
def lean_runs():
    """One thread and no figures for the in-process runs (they test states, not pictures)."""
    import cover.engine.curves as curves
    import cover.pretraining.figures as figures

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "plot_flow", lambda *args, **kwargs: None)
        patch.setattr(curves, "plot_losses", lambda *args, **kwargs: None)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """A finished 6-step run with checkpoints at steps 2, 4 and 6."""
    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain(**tiny(out))
    assert [p.name for p in list_checkpoints(out)] == [f"step_{s:08d}.pt" for s in (2, 4, 6)]
    return out


def test_checkpoint_holds_every_state_as_plain_values(reference_run):
    path = list_checkpoints(reference_run)[-1]
    state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects at all
    assert {"model", "optimizer", "scheduler", "scaler", "step", "rng", "data_order", "config", "metadata"} <= set(
        state
    )
    assert state["step"] == 6 and state["scheduler"]["last_epoch"] == 6
    assert state["data_order"] == {"sampler": "step-indexed", "seed": 0, "next_step": 6}
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    json.dumps(state["config"])  # plain JSON-able values
    json.dumps(state["metadata"])
    assert state["config"]["model"]["channels"] == TINY_MODEL["channels"]
    assert state["metadata"]["spatial_dims"] == 2 and state["metadata"]["patch_size"] == [32, 32]


def test_rng_state_round_trip():
    import random

    saved = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(5), np.random.rand(5), random.random()  # move every generator on
    restore_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_truncated_newest_checkpoint_falls_back_to_the_previous(reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    newest = list_checkpoints(out)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])  # killed half-way through a copy
    partial = out / "checkpoints" / ".step_00000008.pt.x1y2.tmp"  # a save killed before its rename
    partial.write_bytes(b"half")
    with pytest.warns(UserWarning, match=r"skipping unusable checkpoint: .*step_00000006\.pt"):
        found = find_resume_checkpoint(out)
    assert found[0].name == "step_00000004.pt" and found[1]["step"] == 4
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        pretrain(**tiny(out, resume="auto"))
    assert not partial.exists()
    a, b = losses(reference_run), losses(out)
    assert list(a) == list(b) == list(range(1, 7))
    np.testing.assert_allclose(list(b.values()), list(a.values()), rtol=0, atol=1e-6)
    assert model_states_equal(
        load_checkpoint(checkpoint_path(reference_run, 6))["model"], load_checkpoint(newest)["model"], atol=1e-6
    )


def test_workers_give_the_same_batches_after_resume(reference_run, tmp_path):
    """Resume from step 4 with two DataLoader workers: same losses as the single-process run."""
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    list_checkpoints(out)[-1].unlink()
    summary = pretrain(**tiny(out, resume="auto", num_workers=2))
    assert summary["start_step"] == 4
    np.testing.assert_allclose(list(losses(out).values()), list(losses(reference_run).values()), rtol=0, atol=1e-6)


def test_checkpoint_every_minutes(tmp_path):
    pretrain(**tiny(tmp_path / "run", steps=3, checkpoint_every=1000, checkpoint_minutes=1e-9))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [f"step_{s:08d}.pt" for s in (1, 2, 3)]


def _inject_nonfinite(monkeypatch, bad: dict[int, str]) -> None:
    """Make training step ``s`` (1-based) give a NaN loss (``"loss"``) or a finite loss with
    infinite gradients (``"grad"``)."""
    # The start-up memory probe calls CoverMethod.forward too; it is off here so that the
    # counter counts training steps only.
    monkeypatch.setenv("COVER_MEMORY_CHECK", "0")
    original = CoverMethod.forward
    calls = {"n": 0}

    def forward(self, views):
        result = original(self, views)
        calls["n"] += 1
        kind = bad.get(calls["n"])
        if kind == "loss":
            result["loss"] = result["loss"] * float("nan")
        elif kind == "grad":
            total = sum(p.sum() for p in self.parameters())
            result["loss"] = result["loss"] + torch.sqrt(total - total.detach())  # adds 0, gradient inf
        return result

    monkeypatch.setattr(CoverMethod, "forward", forward)


def test_nonfinite_steps_are_skipped_counted_and_reported(tmp_path, monkeypatch, caplog):
    _inject_nonfinite(monkeypatch, {2: "loss", 3: "grad"})
    out = tmp_path / "run"
    summary = pretrain(**tiny(out, steps=4, checkpoint_every=1))
    assert summary["nonfinite_steps"] == 2 and np.isfinite(summary["final_loss"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("step 2: non-finite loss or gradient, step skipped (1 in a row") for m in warned)
    assert any(m.startswith("step 3: non-finite loss or gradient, step skipped (2 in a row") for m in warned)
    states = {s: load_checkpoint(checkpoint_path(out, s)) for s in (1, 3, 4)}
    # Skipped steps change neither the weights nor the optimizer's moments.
    assert model_states_equal(states[1]["model"], states[3]["model"])
    moments = [(s["optimizer"]["state"][0]["exp_avg"], s["optimizer"]["state"][0]["step"]) for s in states.values()]
    assert torch.equal(moments[0][0], moments[1][0]) and moments[0][1] == moments[1][1] == 1
    assert not model_states_equal(states[3]["model"], states[4]["model"])
    assert states[4]["nonfinite_steps"] == 2


def test_consecutive_nonfinite_steps_abort_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    _inject_nonfinite(monkeypatch, {s: "loss" for s in range(3, 20)})
    out = tmp_path / "run"
    with pytest.raises(CoverError) as error:  # the CLI prints it as one "error: ..." line, exit 2
        pretrain(**tiny(out, steps=10, max_nonfinite_steps=3))
    assert str(error.value) == (
        f"aborting at step 5: 3 consecutive non-finite steps (lower --lr or check the data); "
        f"the last good checkpoint in {out} is kept"
    )
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002.pt", "step_00000004.pt"]
    good, last = load_checkpoint(checkpoint_path(out, 2)), load_checkpoint(checkpoint_path(out, 4))
    assert model_states_equal(good["model"], last["model"])  # steps 3-4 were skipped, not applied
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not (out / "summary.json").exists()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def full_disk_save(obj, stream, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            stream.write(b"partial bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk_save)
    out = tmp_path / "run"
    with pytest.raises(CoverError) as error:
        pretrain(**tiny(out))
    assert str(error.value) == (
        f"{checkpoint_path(out, 4)}: could not save checkpoint (No space left on device); "
        "earlier checkpoints are intact"
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt"]  # no temporary left
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert load_checkpoint(checkpoint_path(out, 2))["step"] == 2


def _interrupt_during_step(monkeypatch, step: int, times: int) -> None:
    """Send SIGINT (Ctrl-C) to this process ``times`` times in the middle of training step ``step``."""
    # The start-up memory probe calls CoverMethod.forward too; it is off here so that the
    # counter counts training steps only.
    monkeypatch.setenv("COVER_MEMORY_CHECK", "0")
    original = CoverMethod.forward
    calls = {"n": 0}

    def forward(self, views):
        calls["n"] += 1
        if calls["n"] == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, views)

    monkeypatch.setattr(CoverMethod, "forward", forward)


def test_ctrl_c_finishes_the_step_and_a_second_one_stops_at_once(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGINT)
    _interrupt_during_step(monkeypatch, step=2, times=1)
    out = tmp_path / "once"
    with pytest.raises(TrainingInterrupted) as error:
        pretrain(**tiny(out, checkpoint_every=5))
    assert str(error.value) == (
        f"interrupted at step 2; checkpoint saved in {out / 'checkpoints'}; "
        f"continue with: cover pretrain --out {out} --resume auto"
    )
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002.pt"] and list(losses(out)) == [1, 2]
    assert signal.getsignal(signal.SIGINT) is before  # handlers are restored

    monkeypatch.undo()
    _interrupt_during_step(monkeypatch, step=2, times=2)
    with pytest.raises(KeyboardInterrupt):  # the CLI prints "interrupted" and exits 130
        pretrain(**tiny(tmp_path / "twice", checkpoint_every=5))
    assert list_checkpoints(tmp_path / "twice") == []
    assert signal.getsignal(signal.SIGINT) is before


def test_permission_error_at_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "step_00000002.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 2}, path)

    def denied(*_):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(checkpoint_module.os, "replace", denied)
    with pytest.raises(CoverError, match=r"could not save checkpoint \(Permission denied\); earlier checkpoints"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 3}, path)
    assert list(path.parent.iterdir()) == [path]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_overwrite_replaces_the_earlier_results_only(reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CoverError, match="already holds files of another run"):
        pretrain(**tiny(out, steps=2))
    pretrain(**tiny(out, steps=2, checkpoint_every=1, overwrite=True))
    # The old run's checkpoints 4 and 6 are gone, so a later --resume auto cannot pick them up.
    assert [p.name for p in list_checkpoints(out)] == ["step_00000001.pt", "step_00000002.pt"]
    assert list(losses(out)) == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"
