"""Tensor operations, FLOPs and host time of one pretraining step at the paper's sizes, per MoV schedule.

A GPU runs one kernel launch (at least) per tensor operation, so a step that issues tens of
thousands of small operations is bound by launches, not by arithmetic. This benchmark counts,
without a GPU, what a step would give the device:

* **operations**: every ATen operation that reaches a counting ``TorchDispatchMode`` during the
  forward and backward pass of the default COVER model and recipe on ``FakeTensorMode`` tensors
  (shapes and dtypes only, no data; views and in-place operations count too), in all and inside
  the MoV alone (:func:`cover.nn.mov.mixture_of_vectors`, forward and backward);
* **FLOPs** of the same forward + backward (``torch.utils.flop_counter.FlopCounterMode``, which
  counts matrix products and convolutions);
* **peak memory** of the step (``torch.distributed._tools.mem_tracker.MemTracker`` on the fake
  tensors: parameters, gradients, activations, temporaries; no optimiser state), and the largest
  peak of one MoV call's forward + backward beyond its inputs;
* **host time on the meta device**: CPU seconds of this process (not wall time, so other processes on
  a shared machine do not count) for one forward + backward with every tensor on
  ``meta`` (shape computation and dispatch only: the cost of issuing the operations, without
  the arithmetic), median of ``--repeats``.

Cases: 2D 384^2 batch 24 and 3D 96^3 batch 2 (the default model of runs on the user's data:
the paper's U-Net, heads 4,4,4,1,1, window radius 2), for each ``--schedules``. ``fused`` is the
schedule ``mov_schedule: auto`` gives a CUDA device. Views are random (the operations do not
depend on the data). Writes ``ops.json`` and ``ops.md`` under ``--out``.

    python benchmarks/bench_ops.py --out benchmarks/results/ops
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from common import load_average, machine, markdown_table
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import cover.nn.mov as mov
from cover.config import resolve_pretrain_config
from cover.pretraining.pretrain import build_model
from cover.views import ViewPair

CASES = {"2d": (2, 384, 24), "3d": (3, 96, 2)}


class CountOps(TorchDispatchMode):
    """Counts the ATen operations dispatched while active (in all, and by name).

    Metadata queries (the ``prim`` namespace, e.g. ``prim.device``) are not operations on data
    and are left out; views and in-place operations count.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        if func.namespace != "prim":
            self.names[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Operations counted so far."""
        return sum(self.names.values())


def build(dim: int, size: int, batch: int, schedule: str, device: str):
    """The default model with ``schedule`` and one random view pair, on ``device`` (or the current fake mode)."""
    config = resolve_pretrain_config(
        {"dim": dim, "size": size, "batch_size": batch, "data": "unused", "model": {"mov_schedule": schedule}}
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(config)
    shape = (batch, 1, *config.size)
    views = ViewPair(
        torch.rand(shape, device=device),
        torch.rand(shape, device=device),
        torch.randn((batch, dim, *config.size), device=device),
        torch.ones(shape, device=device),
    )
    return config, model, views


def step(model, views) -> None:
    """Forward and backward of one step (the optimiser's few fused operations left out)."""
    losses = model(views)
    losses["loss"].backward()


class MovCalls:
    """Records the input shape, heads, radius and schedule of every MoV call while active."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], int, int, str]] = []
        self.original = mov.mixture_of_vectors

    def __enter__(self) -> MovCalls:
        def recorded(query, key, heads, radius, schedule="auto"):
            self.calls.append((tuple(query.shape), heads, radius, schedule))
            return self.original(query, key, heads, radius, schedule)

        mov.mixture_of_vectors = recorded
        return self

    def __exit__(self, *exc) -> None:
        mov.mixture_of_vectors = self.original


def mov_ops(calls: list[tuple[tuple[int, ...], int, int, str]]) -> tuple[int, float]:
    """The MoV calls alone, each one's forward and backward on fake tensors of its shape.

    Returns:
        ``(operations of all calls, the largest peak GiB of one call beyond its inputs)``.
    """
    total, peak = 0, 0.0
    for shape, heads, radius, schedule in calls:
        with FakeTensorMode():
            query = torch.randn(shape, requires_grad=True)
            key = torch.randn(shape, requires_grad=True)
            with MemTracker() as memory:
                with CountOps() as forward:
                    out = mov.mixture_of_vectors(query, key, heads, radius, schedule)
                grad = torch.ones_like(out)
                with CountOps() as backward:
                    torch.autograd.grad(out, (query, key), grad)
            peak = max(peak, peak_gib(memory))
        total += forward.total + backward.total
    return total, peak


def peak_gib(tracker: MemTracker) -> float:
    """The peak a ``MemTracker`` recorded, in GiB (all devices)."""
    return sum(stats["Total"] for stats in tracker.get_tracker_snapshot("peak").values()) / 2**30


def count_case(dim: int, size: int, batch: int, schedule: str) -> dict:
    """Operations (all and MoV) and FLOPs of one forward + backward on fake tensors."""
    with FakeTensorMode():
        _, model, views = build(dim, size, batch, schedule, "cpu")
        with MemTracker() as memory:
            memory.track_external(model)
            with CountOps() as counter, MovCalls() as calls:
                step(model, views)
    inside, mov_peak = mov_ops(calls.calls)
    with FakeTensorMode():
        _, model, views = build(dim, size, batch, schedule, "cpu")
        with FlopCounterMode(display=False) as flops:
            step(model, views)
    return {
        "ops": counter.total,
        "mov_ops": inside,
        "other_ops": counter.total - inside,
        "tflop": flops.get_total_flops() / 1e12,
        "peak_gib": peak_gib(memory),
        "mov_peak_gib": mov_peak,
        "top_ops": dict(counter.names.most_common(12)),
    }


def meta_seconds(dim: int, size: int, batch: int, schedule: str, repeats: int) -> float:
    """Median host CPU seconds (process time: insensitive to other processes) of one forward + backward on meta."""
    _, model, views = build(dim, size, batch, schedule, "meta")
    step(model, views)  # warm-up
    seconds = []
    for _ in range(repeats):
        tic = time.process_time()
        step(model, views)
        seconds.append(time.process_time() - tic)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="2d, 3d or DIM:SIZE:BATCH")
    parser.add_argument("--schedules", nargs="*", default=["fused", "chunked"], choices=["fused", "chunked"])
    parser.add_argument("--repeats", type=int, default=3, help="meta-device steps timed per case")
    parser.add_argument("--out", type=Path, default=None, help="folder for ops.json and ops.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for case in args.cases:
        dim, size, batch = CASES[case] if case in CASES else map(int, case.split(":"))
        for schedule in args.schedules:
            row = {"case": case, "dim": dim, "size": size, "batch": batch, "schedule": schedule}
            row.update(count_case(dim, size, batch, schedule))
            row["meta_seconds"] = meta_seconds(dim, size, batch, schedule, args.repeats)
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    header = [
        "case",
        "MoV schedule",
        "ops / step",
        "MoV ops",
        "other ops",
        "TFLOP / step",
        "meta host CPU s / step",
        "peak GiB / step",
        "largest MoV call's peak GiB",
    ]
    rows = [
        [
            f"{r['dim']}D {r['size']}^{r['dim']} B={r['batch']}",
            r["schedule"],
            str(r["ops"]),
            str(r["mov_ops"]),
            str(r["other_ops"]),
            f"{r['tflop']:.2f}",
            f"{r['meta_seconds']:.2f}",
            f"{r['peak_gib']:.1f}",
            f"{r['mov_peak_gib']:.2f}",
        ]
        for r in results
    ]
    table = markdown_table(header, rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/bench_ops.py " + " ".join(sys.argv[1:])
        report = {"command": command, "machine": machine(), "load_average": load_average(), "results": results}
        (args.out / "ops.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "ops.md").write_text(
            f"`{command}`\n\n{machine()}\n\n{table}\n\nLoad average after: {load_average()}\n"
        )


if __name__ == "__main__":
    main()
