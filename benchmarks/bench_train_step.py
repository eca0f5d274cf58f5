"""Benchmark one full COVER pretraining iteration, with the loop MoV oracle and the fast kernel.

An iteration is what ``cover pretrain`` does per step: SeVR views of a batch (batched, on the
device), the U-Net on both views, VPA, the vector and consistency losses, backward, gradient
clipping and an Adam step. Cases:

* 2D: B=2, 128x128, default U-Net, fp32 and bf16 autocast (``--amp bf16``), loop vs fast MoV;
* 3D: B=1, 64^3, fp32, loop vs fast MoV.

``--breakdown`` (CPU) also profiles each case with ``torch.profiler`` and splits the operator time
of an iteration into convolutions (forward and backward) and everything else. From that it
prints, per case, the speed-up over fp32 + loop MoV that the case would reach if everything but
its convolutions took no time (the ceiling its convolutions allow), and how much time everything
else may take for a 2x iteration; plus the fp32 vs bf16 matrix-multiplication throughput of the
machine (the ceiling of any compute-bound kernel's bf16 speed-up).

The MoV kernel is swapped by replacing ``cover.nn.mov.mixture_of_vectors`` (what
:class:`~cover.nn.mov.MixtureOfVectors` calls) with the loop oracle. Source images are random
(the cost does not depend on their content).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from common import Timing, heading, load_average, markdown_table, setup_threads, time_call

import cover.nn.mov as mov
from cover.config import resolve_pretrain_config
from cover.nn.mov_reference import loop_mov
from cover.pretraining.pretrain import build_model, source_size
from cover.views import ViewGenerator


def _loop(query, key, heads, radius, schedule="auto"):
    """The loop oracle with the fast kernel's signature (the schedule does not apply to it)."""
    return loop_mov(query, key, heads, radius)


KERNELS = {"fast": mov.mixture_of_vectors, "loop": _loop}


def same_shape(case: str, other: str) -> bool:
    """Whether two ``dim:size:batch:...`` cases train the same problem."""
    return case.split(":")[:3] == other.split(":")[:3]


def is_convolution(name: str) -> bool:
    """Whether a profiler operator name is a convolution kernel or its wrapper/backward."""
    return name.startswith("aten::") and "conv" in name


@dataclass
class OperatorSplit:
    """Operator self time per iteration, in seconds, split into convolutions and the rest."""

    convolution: float
    other: float

    @property
    def total(self) -> float:
        """Both together."""
        return self.convolution + self.other


def operator_split(iteration: Callable[[], object], repeats: int) -> OperatorSplit:
    """Profile ``repeats`` calls (after one warm-up) and split their CPU self time.

    Args:
        iteration: One training iteration.
        repeats: Profiled iterations.

    Returns:
        The per-iteration :class:`OperatorSplit`.
    """
    iteration()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(repeats):
            iteration()
    events = profile.key_averages()
    convolution = sum(e.self_cpu_time_total for e in events if is_convolution(e.key))
    total = sum(e.self_cpu_time_total for e in events)
    return OperatorSplit(convolution / repeats / 1e6, (total - convolution) / repeats / 1e6)


def matmul_throughput(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype`` on the CPU (median of repeats)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    timing = time_call(lambda: a @ b, repeats, warmup=1)
    return 2 * size**3 / timing.median / 1e9


def breakdown_table(cases: list[str], splits: dict[str, OperatorSplit]) -> str:
    """Markdown table of each case's split and the ceilings it implies (see the module docstring)."""
    rows = []
    for case in cases:
        split = splits[case]
        reference = next((c for c in cases if same_shape(c, case) and c.endswith(":none:loop")), None)
        row = [case, f"{1e3 * split.total:.0f}", f"{1e3 * split.convolution:.0f}", f"{1e3 * split.other:.0f}"]
        if reference is None or reference == case:
            row += ["-", "-"]
        else:
            baseline = splits[reference].total
            row += [f"{baseline / split.convolution:.2f}x", f"{1e3 * (baseline / 2 - split.convolution):.0f}"]
        rows.append(row)
    header = [
        "case",
        "operator ms / iteration",
        "convolutions ms",
        "everything else ms",
        "ceiling: speed-up vs fp32 + loop if everything else took 0 ms",
        "everything-else budget for 2x, ms",
    ]
    return markdown_table(header, rows)


class Iteration:
    """A model, optimiser, view generator and source batch; calling it runs one training step.

    Args:
        dim: 2 or 3.
        size: Crop size per axis.
        batch: Batch size.
        amp: ``none`` or ``bf16`` (``fp16`` on CUDA).
        device: Device.
        channels_last: Put the model and views in channels-last memory format.
    """

    def __init__(
        self,
        dim: int,
        size: int,
        batch: int,
        amp: str,
        device: torch.device,
        channels_last: bool = False,
        model: dict | None = None,
    ):
        torch.manual_seed(0)
        # Naming the backbone gives the paper's U-Net also in 3D (the built-in 3D demo trains a
        # half-width one); the layout is this benchmark's own choice, not the demo's.
        model = {"backbone": "unet"} if model is None else model
        self.config = resolve_pretrain_config(
            {"dim": dim, "size": size, "batch_size": batch, "amp": amp, "model": model}
        )
        self.config.channels_last = channels_last
        self.model = build_model(self.config).to(device)
        self.format = (torch.channels_last, torch.channels_last_3d)[dim - 2] if channels_last else None
        if self.format is not None:
            self.model = self.model.to(memory_format=self.format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4, weight_decay=1e-4)
        self.generator = ViewGenerator(self.config.views, self.config.size)
        shape = (batch, self.config.in_channels, *source_size(self.config))
        self.source = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
        self.device = device
        self.amp = amp
        self.step = 0

    def autocast(self):
        """The trainer's autocast context for ``amp``."""
        if self.amp == "none":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def __call__(self) -> float:
        self.step += 1
        with torch.no_grad():
            views = self.generator(self.source, torch.Generator(device=self.device).manual_seed(self.step))
        if self.format is not None:
            views = type(views)(*[v.contiguous(memory_format=self.format) for v in views])
        with self.autocast():
            losses = self.model(views)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return losses["loss"].detach()


def run_case(
    dim: int, size: int, batch: int, amp: str, kernel: str, repeats: int, device, channels_last: bool, breakdown: bool
) -> tuple[Timing, OperatorSplit | None]:
    """Time ``repeats`` iterations (after one warm-up) with the given MoV kernel; optionally profile as many."""
    mov.mixture_of_vectors = KERNELS[kernel]
    try:
        iteration = Iteration(dim, size, batch, amp, device, channels_last)
        timing = time_call(iteration, repeats, warmup=1, device=device)
        return timing, operator_split(iteration, repeats) if breakdown else None
    finally:
        mov.mixture_of_vectors = KERNELS["fast"]


def interleaved_schedules(dim: int, size: int, batch: int, rounds: int, device: torch.device) -> list[str]:
    """Step seconds of the demo's model with the ``chunked`` and ``fused`` MoV, timed alternately.

    The two iterations run in one process, A B A B ... (``rounds`` each, after one warm-up each),
    so that a load change on a shared machine affects both alike. Returns one table row: wall and
    process-CPU medians of each and the ratios fused / chunked.
    """
    demo = resolve_pretrain_config({"dim": dim})  # the built-in demo's model and layout
    runs = {}
    for schedule in ("chunked", "fused"):
        model = {**mov_model(demo), "mov_schedule": schedule}
        runs[schedule] = Iteration(dim, size, batch, "none", device, demo.channels_last, model=model)
        runs[schedule]()  # warm-up
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for _ in range(rounds):
        for name, iteration in runs.items():
            tic, cpu_tic = time.perf_counter(), time.process_time()
            iteration()
            wall[name].append(time.perf_counter() - tic)
            cpu[name].append(time.process_time() - cpu_tic)
    med = {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in runs}
    return [
        f"{dim}D {size}^{dim} B={batch}",
        f"{1e3 * med['chunked'][0]:.1f} / {1e3 * med['chunked'][1]:.1f}",
        f"{1e3 * med['fused'][0]:.1f} / {1e3 * med['fused'][1]:.1f}",
        f"{med['fused'][0] / med['chunked'][0]:.2f} / {med['fused'][1] / med['chunked'][1]:.2f}",
    ]


def mov_model(config) -> dict:
    """The model settings of a resolved config as a plain dict."""
    return {k: getattr(config.model, k) for k in ("backbone", "channels", "heads", "head_dim", "window_radius")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases",
        nargs="*",
        default=[
            "2:128:2:none:loop",
            "2:128:2:none:fast",
            "2:128:2:bf16:loop",
            "2:128:2:bf16:fast",
            "3:64:1:none:loop",
            "3:64:1:none:fast",
        ],
        help="dim:size:batch:amp:kernel[:cl] entries (cl: channels-last)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per 2D case (3D: at most 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and inputs in every case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--breakdown", action="store_true", help="also profile each case: convolutions vs everything else (CPU only)"
    )
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="side of the matrix product timed with --breakdown (fp32, bf16)"
    )
    parser.add_argument(
        "--interleave-schedules",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="instead: the demo model's steps with the chunked and fused MoV, alternately ROUNDS times each "
        "(2D 64^2 B=4, 3D 24^3 B=1)",
    )
    args = parser.parse_args()
    setup_threads(args.threads)
    device = torch.device(args.device)
    if args.interleave_schedules:
        print(heading("MoV schedules, interleaved"))
        rows = [
            interleaved_schedules(d, s, b, args.interleave_schedules, device) for d, s, b in ((2, 64, 4), (3, 24, 1))
        ]
        header = ["case", "chunked ms: wall / CPU", "fused ms: wall / CPU", "fused / chunked: wall / CPU"]
        print(markdown_table(header, rows))
        print(f"\n{args.interleave_schedules} steps each, alternating. Load average after: {load_average()}")
        return
    if args.breakdown and device.type != "cpu":
        parser.error("--breakdown profiles CPU operator time; leave it out on CUDA")
    print(heading("Training iteration"))
    rows, medians, splits = [], {}, {}
    for case in args.cases:
        dim, size, batch, amp, kernel, *layout = case.split(":")
        dim, size, batch = int(dim), int(size), int(batch)
        channels_last = args.channels_last or layout == ["cl"]
        repeats = args.repeats if dim == 2 else min(3, args.repeats)
        timing, split = run_case(dim, size, batch, amp, kernel, repeats, device, channels_last, args.breakdown)
        medians[case] = timing.median
        if split is not None:
            splits[case] = split
        precision = ("fp32" if amp == "none" else amp) + (", channels-last" if channels_last else "")
        rows.append([f"{dim}D {size}^{dim} B={batch}", precision, kernel, timing.ms()])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    baseline = {f"{c.split(':')[0]}:{c.split(':')[1]}": medians[c] for c in medians if c.endswith(":none:loop")}
    for row, case in zip(rows, medians, strict=True):
        base = baseline.get(":".join(case.split(":")[:2]))
        row.append(f"{base / medians[case]:.2f}x" if base else "-")
    header = ["case", "precision", "MoV", "iteration ms, median (min-max)", "speed-up vs fp32 + loop MoV"]
    print(markdown_table(header, rows))
    if args.breakdown:
        print(f"\nOperator self time per iteration (torch.profiler, {args.repeats} iterations per case):\n")
        print(breakdown_table(list(medians), splits))
        size = args.matmul_size
        fp32, bf16 = matmul_throughput(torch.float32, size), matmul_throughput(torch.bfloat16, size)
        print(
            f"\n{size}x{size} matrix product on this CPU: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s "
            f"({bf16 / fp32:.2f}x)."
        )
    print(f"\nLoad average after: {load_average()}")


if __name__ == "__main__":
    main()
