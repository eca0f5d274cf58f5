"""The training engine against a plain optimisation loop written out by hand, on a toy regression task.

Every trainer (pretraining, fine-tuning) runs on :class:`cover.engine.loop.Engine`; these tests
pin down what the engine itself does, independently of any network: the optimiser step with
clipping and schedule, the non-finite guard, logging, early stopping, checkpoints, exact resume
and stop signals.
"""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch import nn

from cover.engine.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from cover.engine.distributed import DistributedContext
from cover.engine.logger import read_log
from cover.engine.loop import Engine, LoopOptions, Parts, Resumed, Task, adam_warmup_cosine
from cover.engine.precision import grad_scaler
from cover.engine.schedule import warmup_cosine
from cover.errors import CoverError, TrainingInterrupted

CONTEXT = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
TRUE_WEIGHTS = torch.tensor([[1.5, -2.0, 0.25]])


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression batch that depends on the step only: ``(8, 3)`` inputs and ``(8, 1)`` targets."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 3, generator=generator) * (1 + step)  # growing inputs: clipping matters
    return x, x @ TRUE_WEIGHTS.T + 0.5


class Regression(Task):
    """Mean squared error of a linear model; optional non-finite steps, early stop and stop signal."""

    name = "toy"
    checkpoint_format = "toy/1"
    columns = ["loss", "loss_abs", "lr", "seconds"]

    def __init__(self, poison: set[int] = frozenset(), stop_at: int | None = None, signal_at: int | None = None):
        self.poison, self.stop_at, self.signal_at = poison, stop_at, signal_at
        self.seen: list[int] = []

    def prepare(self, batch, step):
        self.seen.append(step)
        return batch

    def losses(self, network, inputs):
        x, y = inputs
        error = network(x) - y
        loss = (error**2).mean()
        if self.seen[-1] in self.poison:
            loss = loss * math.nan
        return {"loss": loss, "loss_abs": error.abs().mean()}

    def after_step(self, done, values):
        if done == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return {}

    def should_stop(self, done):
        return f"stopped at {done}" if done == self.stop_at else None

    def state(self, done, skipped, seconds):
        return {"toy": {"done": done, "skipped": skipped}}


def options(steps: int = 6, **changes) -> LoopOptions:
    values = dict(
        steps=steps, amp="none", grad_clip=1.0, log_every=1, checkpoint_every=3, checkpoint_minutes=None,
        keep_checkpoints=10, max_nonfinite_steps=3,
    )  # fmt: skip
    return LoopOptions(**(values | changes))


def parts(steps: int = 6) -> Parts:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer, scheduler = adam_warmup_cosine(model.parameters(), 0.1, 0.0, steps, 2)
    return Parts(model, optimizer, scheduler, grad_scaler("none", torch.device("cpu")))


def train(out, task, steps=6, resumed=None, run_parts=None, **changes):
    out.mkdir(parents=True, exist_ok=True)
    run_parts = run_parts or parts(steps)
    engine = Engine(task, run_parts, options(steps, **changes), CONTEXT, out, {"config": {"steps": steps}}, resumed)
    start = resumed.step if resumed else 0
    return engine.run(batch(s) for s in range(start, steps + 5)), run_parts.model


def reference(steps: int = 6, poison: set[int] = frozenset(), clip: float = 1.0) -> tuple[nn.Module, list[float]]:
    """The same training written as a plain loop (Adam, warm-up + cosine, clipping, skipped steps)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)  # the engine's Adam (on-device skips)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, 2))
    losses = []
    for step in range(steps):
        x, y = batch(step)
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        if step in poison:
            losses.append(math.nan)
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    return model, losses


def test_engine_trains_like_a_plain_loop(tmp_path):
    result, model = train(tmp_path / "run", Regression())
    expected, losses = reference()
    assert torch.equal(model.weight, expected.weight) and torch.equal(model.bias, expected.bias)
    log = read_log(tmp_path / "run" / "log.csv")
    assert log["step"] == [1, 2, 3, 4, 5, 6] and log["loss"] == losses
    assert log["lr"] == pytest.approx([0.1 * warmup_cosine(s, 6, 2) for s in range(1, 7)])
    assert result.done == 6 and result.skipped == 0 and len(result.digests) == 1
    unclipped, _ = reference(clip=math.inf)
    assert not torch.equal(unclipped.weight, expected.weight)  # clipping changed the result: the test can fail


def test_checkpoints_hold_the_engine_and_task_states(tmp_path):
    train(tmp_path / "run", Regression())
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003.pt", "step_00000006.pt"]
    state = load_checkpoint(checkpoint_path(tmp_path / "run", 3))
    assert state["format"] == "toy/1" and state["step"] == 3 and state["config"] == {"steps": 6}
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)
    assert state["toy"] == {"done": 3, "skipped": 0}


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    result, model = train(tmp_path / "run", Regression(poison={2, 3}))
    expected, losses = reference(poison={2, 3})
    assert torch.equal(model.weight, expected.weight)
    assert result.skipped == 2
    assert load_checkpoint(checkpoint_path(tmp_path / "run", 6))["toy"]["skipped"] == 2
    assert math.isnan(read_log(tmp_path / "run" / "log.csv")["loss"][2])
    with pytest.raises(CoverError, match="3 consecutive non-finite steps"):
        train(tmp_path / "abort", Regression(poison={1, 2, 3}))


def test_resume_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    _, full = train(tmp_path / "full", Regression())
    saved = load_checkpoint(checkpoint_path(tmp_path / "full", 3))
    resumed_parts = parts()
    for target, state in resumed_parts.states(saved):
        target.load_state_dict(state)
    task = Regression()
    result, model = train(tmp_path / "full", task, resumed=Resumed(3, 0, 1.0, saved["rng"]), run_parts=resumed_parts)
    assert task.seen == [3, 4, 5] and result.done == 6
    assert torch.equal(model.weight, full.weight) and torch.equal(model.bias, full.bias)
    assert read_log(tmp_path / "full" / "log.csv")["step"] == [1, 2, 3, 4, 5, 6]  # rows after step 3 replaced


def test_early_stop_saves_and_ends_the_loop(tmp_path):
    task = Regression(stop_at=4)
    result, _ = train(tmp_path / "run", task, steps=10, checkpoint_every=100)
    assert result.done == 4 and task.seen == [0, 1, 2, 3]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000004.pt"]


def test_a_stop_signal_finishes_the_step_saves_and_names_the_resume_command(tmp_path):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in a background job
    with pytest.raises(TrainingInterrupted, match=f"interrupted at step 2; .*cover toy --out {out} --resume auto"):
        train(out, Regression(signal_at=2), steps=10, checkpoint_every=100)
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002.pt"]
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
