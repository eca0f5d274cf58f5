"""A pretraining step waits for the device only at sync steps (log, checkpoint, last).

On a GPU a host read of a device value (``.item()``, ``float()``, ``bool()``, ``.tolist()``, a
data-dependent shape such as ``nonzero``) stalls the CPU until every queued kernel has run,
so the next step cannot be queued behind the current one. On the CPU nothing stalls, but
the same reads are visible: every one of them reaches aten's ``_local_scalar_dense`` (or an op
whose output shape depends on values), or calls ``Tensor.tolist`` / ``Tensor.numpy``. A
dispatch mode counts them per training step.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cover.engine.loop import Engine
from cover.pretraining.pretrain import pretrain
from cover.pretraining.task import PretrainTask

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
#: aten ops that read device values on the host.
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values, per training step (set by ``PretrainTask.prepare``)."""

    def __init__(self) -> None:
        super().__init__()
        self.step: int | None = None
        self.reads: Counter = Counter()

    def note(self, name: str) -> None:
        if self.step is not None:
            self.reads[(self.step, name)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in HOST_READS:
            self.note(func.__name__)
        return func(*args, **(kwargs or {}))


def test_steps_between_log_steps_read_nothing_from_the_device(tmp_path, monkeypatch):
    counter = HostReads()
    prepare = PretrainTask.prepare

    def counted_prepare(self, batch, step):
        counter.step = step
        return prepare(self, batch, step)

    monkeypatch.setattr(PretrainTask, "prepare", counted_prepare)
    run = Engine.run

    def counted_run(self, batches):
        with counter:
            return run(self, batches)

    monkeypatch.setattr(Engine, "run", counted_run)
    for name in ("tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def patched(self, *args, _original=original, _name=name, **kwargs):
            counter.note(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    options = {"dim": 2, "size": 32, "batch_size": 2, "steps": 6, "log_every": 5, "checkpoint_every": 100}
    views = {"blur_sigma_max": 1.0}  # the blur's kernel radius once read the largest sigma from the device
    pretrain(out=str(tmp_path / "run"), device="cpu", model=TINY_MODEL, eval_pairs=2, views=views, **options)
    by_step = Counter()
    for (step, _), count in counter.reads.items():
        by_step[step] += count
    assert [by_step[step] for step in range(4)] == [0, 0, 0, 0], counter.reads  # steps 1-4: no log, no checkpoint
    assert by_step[4] > 0  # step 5 logs: its values come to the host (the counter sees reads)
