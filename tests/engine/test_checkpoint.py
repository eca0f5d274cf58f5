"""Training-state checkpoints: loading an optimiser state saved by another optimiser implementation."""

from __future__ import annotations

import copy

import torch
from torch import nn

from cover.engine.checkpoint import load_states
from cover.engine.loop import adam

TARGET = torch.tensor([0.3, -1.2, 2.0, 0.7])


def loss_of(weight: nn.Parameter, step: int) -> torch.Tensor:
    """A step-dependent quadratic loss of a ``(4,)`` weight."""
    scale = torch.arange(1.0, 5.0) * (1 + 0.1 * step)
    return ((weight - TARGET) ** 2 * scale).sum()


def train(weight: nn.Parameter, optimizer: torch.optim.Optimizer, steps: range, engine_path: bool) -> None:
    """``optimizer`` steps on :func:`loss_of`; ``engine_path`` steps as the engine steps a fused optimiser."""
    for step in steps:
        optimizer.zero_grad()
        loss_of(weight, step).backward()
        if engine_path:  # cover.engine.loop.Engine._optimizer_step: the skip flag stays on the device
            optimizer.grad_scale, optimizer.found_inf = None, torch.zeros(())
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
        else:
            optimizer.step()


def test_a_non_fused_adam_state_resumes_into_the_engines_fused_adam():
    weight = nn.Parameter(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    plain = torch.optim.Adam([weight], lr=0.05, weight_decay=1e-3)  # what cover saved before fused Adam
    train(weight, plain, range(5), engine_path=False)
    saved, start = copy.deepcopy(plain.state_dict()), weight.detach().clone()  # as torch.save keeps it
    train(weight, plain, range(5, 10), engine_path=False)  # the uninterrupted run

    resumed = nn.Parameter(start.clone())
    fused = adam([resumed], lr=0.05, weight_decay=1e-3)
    assert fused.param_groups[0]["fused"] is True
    load_states("step_00000005.pt", [(fused, saved)])
    assert fused.param_groups[0]["fused"] is True  # the saved group said fused=None
    train(resumed, fused, range(5, 10), engine_path=True)  # raised AssertionError before
    # Same moments, other kernel: equal to rounding. A fresh start (moments lost) ends 4e-2 away.
    torch.testing.assert_close(resumed.detach(), weight.detach(), rtol=0, atol=1e-6)
    assert fused.state_dict()["state"][0]["step"].item() == 10


def test_a_fused_adam_state_resumes_into_a_plain_adam_as_plain():
    weight = nn.Parameter(torch.tensor([1.0, 0.0, -1.0, 0.5]))
    fused = adam([weight], lr=0.05, weight_decay=0.0)
    train(weight, fused, range(3), engine_path=True)
    plain = torch.optim.Adam([nn.Parameter(weight.detach().clone())], lr=0.05)
    load_states("step_00000003.pt", [(plain, fused.state_dict())])
    assert plain.param_groups[0]["fused"] is None and plain.param_groups[0]["foreach"] is None
    assert torch.equal(plain.state_dict()["state"][0]["exp_avg"], fused.state_dict()["state"][0]["exp_avg"])
