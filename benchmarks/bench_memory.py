"""The memory check's estimate against torch's ``MemTracker`` on fake tensors, 2D and 3D, fp32 and bf16.

For each case (``dim:size:batch:amp[:schedule]``, schedule ``auto``, ``fused`` or ``chunked``
of the MoV) the script builds the pretraining config and network of a ``cover pretrain`` run on
user data (the paper's U-Net) and reports

* the estimate of :mod:`cover.engine.memory` as ``cover pretrain`` computes it (the saved
  activations of a small CPU probe under the run's precision, scaled), without its allowance
  for memory beside tensors, plus the parameters the process already holds;
* the peak that torch's ``MemTracker`` records over a training step as the engine runs it
  (views, forward under autocast, gradients set to None, backward, gradient norm, fused Adam)
  at the full size on fake tensors (``FakeTensorMode``: every tensor's bytes, no computation).
  The tracked step is one after the first: it starts with the Adam state and the previous
  step's gradients allocated (made by setting zero gradients and taking an Adam step, which
  allocates the same tensors as a whole first step and costs none of its operations);

and their ratio. ``--real`` runs the same on real tensors as well (real computation:
small sizes only) and adds MemTracker's peak there and the process's peak resident memory
above its resident memory before the network was built (``VmHWM``), which checks that the
fake-tensor peak is the real one. Each case runs in a fresh subprocess. Results go to
``OUT/memory.json`` and ``OUT/memory.md`` (default ``benchmarks/results/memory/``).

    python benchmarks/bench_memory.py                          # the paper's sizes (minutes per case)
    python benchmarks/bench_memory.py --cases 2:64:2:fp32 --real   # one small case, fake against real
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import ROOT, heading, load_average, machine, markdown_table

PAPER_CASES = ("2:384:24:fp32", "2:384:24:bf16", "3:96:2:fp32", "3:96:2:bf16")
GIB = 2**30


def _config(dim: int, size: int, batch: int, amp: str, schedule: str = "auto", settings: dict | None = None):
    """The config of a ``cover pretrain`` run on user data; model ``settings`` replace the paper's U-Net's."""
    from cover.config import resolve_pretrain_config

    amp = "none" if amp == "fp32" else amp
    values = {"dim": dim, "size": size, "batch_size": batch, "steps": 1, "data": "x", "device": "cpu", "amp": amp,
              "model": {**(settings or {}), "mov_schedule": schedule}}  # fmt: skip
    return resolve_pretrain_config(values)


def estimated_bytes(
    dim: int, size: int, batch: int, amp: str, schedule: str = "auto", settings: dict | None = None
) -> float:
    """The memory check's estimate of a step's tensors plus the parameters (what MemTracker counts).

    The estimate's allowance for memory beside tensors (``RUNTIME_BYTES``) is left out: MemTracker
    does not see it.
    """
    from cover.engine.memory import estimate
    from cover.models.networks import build_model
    from cover.views import ViewGenerator

    config = _config(dim, size, batch, amp, schedule, settings)
    torch.manual_seed(0)
    model = build_model(config)

    def forward(twin, probe, probe_batch):
        source = torch.rand(probe_batch, 1, *(round(p * config.views.source_scale) for p in probe))
        return twin(ViewGenerator(config.views, probe)(source, torch.Generator().manual_seed(0)))["loss"]

    found = estimate(model, forward, config.size, model.backbone.divisor, batch, config.amp)
    return found.tensor_bytes() + sum(p.numel() * p.element_size() for p in model.parameters())


def memtracker_bytes(
    dim: int, size: int, batch: int, amp: str, schedule: str = "auto", settings: dict | None = None
) -> float:
    """MemTracker's peak of a training step after the first, on fake tensors (parameters included)."""
    return step_peaks(dim, size, batch, amp, schedule, settings)["memtracker"]


def step_peaks(
    dim: int, size: int, batch: int, amp: str, schedule: str = "auto", settings: dict | None = None, fake: bool = True
) -> dict:
    """MemTracker's peak of a training step after the first at the full size (parameters included).

    Args:
        dim, size, batch, amp, schedule: The case.
        settings: Model settings replacing the paper's U-Net's.
        fake: On fake tensors (no computation); else on real ones, with the peak resident memory too.

    Returns:
        ``{"memtracker": bytes}``, plus ``"rss"`` (bytes above the resident memory before the
        network was built) on real tensors.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from cover.engine.loop import adam
    from cover.engine.precision import autocast
    from cover.models.networks import build_model
    from cover.views import ViewGenerator

    config = _config(dim, size, batch, amp, schedule, settings)
    torch.manual_seed(0)
    if not fake:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM from the resident memory now
        before = _status_bytes("VmRSS")
    with FakeTensorMode() if fake else contextlib.nullcontext():
        model = build_model(config)
        optimizer = adam(model.parameters(), 1e-3, 0.0)
        generator = ViewGenerator(config.views, config.size)
        source = torch.rand(batch, 1, *(round(s * config.views.source_scale) for s in config.size))

        def step() -> None:  # as cover.engine.loop.Engine._step runs it
            with torch.no_grad():
                views = generator(source, torch.Generator().manual_seed(0))
            with autocast(config.amp, torch.device("cpu")):
                loss = model(views)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
            optimizer.step()

        for parameter in model.parameters():  # what every step after the first starts with: the last
            parameter.grad = torch.zeros_like(parameter)  # gradients and (a zero step) the Adam state
        optimizer.step()
        tracker = MemTracker()
        tracker.track_external(model, optimizer, source, *(p.grad for p in model.parameters()))
        with tracker:
            step()
        peak = tracker.get_tracker_snapshot("peak")
    found = {"memtracker": float(sum(snapshot["Total"] for snapshot in peak.values()))}
    if not fake:
        found["rss"] = float(_status_bytes("VmHWM") - before)
    return found


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure(case: str, real: bool) -> dict:
    """The numbers of one case (run in this process)."""
    dim, size, batch, amp, *rest = case.split(":")
    dim, size, batch, schedule = int(dim), int(size), int(batch), (rest or ["auto"])[0]
    row: dict = {"case": case}
    if real:  # first, while the process's resident memory is still small
        tic = time.perf_counter()
        found = step_peaks(dim, size, batch, amp, schedule, fake=False)
        row |= {"real_memtracker_gib": found["memtracker"] / GIB, "real_rss_gib": found["rss"] / GIB,
                "real_seconds": time.perf_counter() - tic}  # fmt: skip
    tic = time.perf_counter()
    planned = estimated_bytes(dim, size, batch, amp, schedule)
    row["estimate_seconds"] = time.perf_counter() - tic
    tic = time.perf_counter()
    tracked = memtracker_bytes(dim, size, batch, amp, schedule)
    row |= {"memtracker_seconds": time.perf_counter() - tic, "estimate_gib": planned / GIB,
            "memtracker_gib": tracked / GIB, "ratio": planned / tracked}  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(PAPER_CASES), help="dim:size:batch:amp[:schedule]")
    parser.add_argument("--real", action="store_true", help="also run the steps on real tensors (small sizes)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "memory")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single case, in this process (the subprocess)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.real)))
        return
    rows, header = [], heading("Memory estimate against MemTracker (one pretraining step, fake tensors)")
    for case in args.cases:
        command = [sys.executable, __file__, "--one", case, *(["--real"] if args.real else [])]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        write(rows, args.out, header)  # after every case: a long run stopped half-way keeps what it measured


def write(rows: list[dict], out: Path, header: str) -> None:
    """``memory.json`` and ``memory.md`` of the cases measured so far."""
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": header.split("`")[1], "machine": machine(), "load_average_after": load_average(), "rows": rows}
    (out / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    real = all("real_rss_gib" in r for r in rows)
    columns = ["case (dim:size:batch:amp[:schedule])", "estimate GiB", "MemTracker GiB (fake)", "estimate / MemTracker"]
    columns += ["MemTracker GiB (real)", "peak RSS GiB (real)"] if real else []
    cells = [
        [r["case"], f"{r['estimate_gib']:.3f}", f"{r['memtracker_gib']:.3f}", f"{r['ratio']:.3f}"]
        + ([f"{r['real_memtracker_gib']:.3f}", f"{r['real_rss_gib']:.3f}"] if real else [])
        for r in rows
    ]
    text = f"{header}\n{markdown_table(columns, cells)}\n\nLoad average after: {load_average()}\n"
    (out / "memory.md").write_text(text)


if __name__ == "__main__":
    main()
