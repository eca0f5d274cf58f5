"""Negatives gathered across DDP processes: two gloo processes give the one-process loss and gradients."""

import time

import pytest
import torch
import torch.multiprocessing as mp

from _support.ddp_contrast import build, run_rank
from cover.geometry import warp
from cover.losses.infonce import nt_xent
from cover.views import ViewPair

WORLD = 2


def global_batch(batch: int = 4, size: int = 16) -> ViewPair:
    """View pairs whose valid masks differ in size from image to image (so do the two halves)."""
    g = torch.Generator().manual_seed(11)
    view_a = torch.rand(batch, 1, size, size, generator=g)
    shifts = torch.tensor([[1.0, 2.0], [-3.0, 0.0], [0.0, 0.0], [5.0, -6.0]])[:batch]
    phi = shifts.view(batch, 2, 1, 1).expand(batch, 2, size, size).contiguous()
    view_b = warp(view_a, phi) + 0.05 * torch.randn(batch, 1, size, size, generator=g)
    grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).float()
    target = grid.unsqueeze(0) + phi
    mask = ((target >= 0) & (target <= size - 1)).all(dim=1, keepdim=True).float()
    return ViewPair(view_a, view_b, phi, mask)


def run_two_processes(method: str, tmp_path):
    torch.manual_seed(3)
    model = build(method)
    views = global_batch()
    payload, result = tmp_path / "payload.pt", tmp_path / "result.pt"
    torch.save({"state": model.state_dict(), "views": views}, payload)
    context = mp.start_processes(
        run_rank,
        args=(WORLD, method, str(payload), str(result), str(tmp_path / "init")),
        nprocs=WORLD,
        start_method="spawn",
        join=False,
    )
    deadline = time.monotonic() + 300  # a hung worker fails the test instead of hanging the suite
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two gloo processes did not finish within 300 s")
    ranks = torch.load(result, weights_only=False), torch.load(result.with_suffix(".rank1"), weights_only=False)
    model.train()
    reference = model(views)
    reference["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return model, views, ranks, reference, grads


@pytest.mark.parametrize("method", ["simclr", "dense-infonce"])
def test_ddp_loss_and_gradients_equal_the_one_process_global_batch(method, tmp_path):
    model, views, ranks, reference, grads = run_two_processes(method, tmp_path)
    loss, acc = ranks[0]["logged"]
    assert loss == pytest.approx(reference["loss"].item(), rel=1e-5)
    assert acc == pytest.approx(reference["acc_pos"].item(), abs=1e-6)
    assert set(ranks[0]["grads"]) == set(grads) == set(ranks[1]["grads"])
    for name, grad in grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-4, atol=1e-7, msg=name)
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name])  # DDP averaged them
    # The processes' own shares differ (different images, and for dense-infonce different
    # numbers of valid pixels), so only the gathered, rescaled losses can average to the reference.
    assert abs(ranks[0]["local_loss"] - ranks[1]["local_loss"]) > 1e-3
    # What the processes saw before gathering (each half contrasted alone) is a different loss.
    model.eval()  # no gathering, no step counter advance; same pixels for dense-infonce at step 0
    if hasattr(model, "head") and hasattr(model.head, "step"):
        model.head.step.zero_()
    halves = [model(ViewPair(*(t[i * 2 : (i + 1) * 2] for t in views)))["loss"].item() for i in range(WORLD)]
    assert abs(sum(halves) / WORLD - loss) > 1e-2


def test_without_a_process_group_gather_changes_nothing():
    g = torch.Generator().manual_seed(0)
    z_a, z_b, weights = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.tensor([1, 0, 1, 1, 1, 0])
    plain, gathered = nt_xent(z_a, z_b, 0.2, weights), nt_xent(z_a, z_b, 0.2, weights, gather=True)
    assert torch.equal(plain[0], gathered[0]) and torch.equal(plain[1], gathered[1])
