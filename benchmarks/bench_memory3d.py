"""Peak memory of one 3D COVER training iteration (B=1, default U-Net) by patch size.

Each size runs in a fresh subprocess: build the model, optimiser and a source batch, reset the
peak RSS, run two training iterations (:class:`bench_train_step.Iteration`) and report

* the process's peak resident set size (``VmHWM``, what must fit in RAM), and
* the peak above the resident size before the first iteration (the iteration's own memory).

On CUDA the same numbers come from ``torch.cuda.max_memory_allocated``. A straight line through
the measured peaks against the number of voxels then estimates the largest cubic patch (a
multiple of 16) whose iteration fits in a memory budget (24 GiB by default); that number is an
extrapolation and is printed as such. Sizes that would not fit this machine are not tried.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_train_step import KERNELS, Iteration
from common import heading, load_average, markdown_table, setup_threads

import cover.nn.mov as mov


def measure_one(size: int, kernel: str, amp: str, device: torch.device, iterations: int = 2) -> dict[str, float]:
    """Peak memory and time of ``iterations`` training iterations at ``size``^3 (run in a fresh process)."""
    mov.mixture_of_vectors = KERNELS[kernel]
    iteration = Iteration(3, size, 1, amp, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _kib("VmRSS") * 1024
    tic = time.perf_counter()
    for _ in range(iterations):
        iteration()
    seconds = (time.perf_counter() - tic) / iterations
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _kib("VmHWM") * 1024
    return {"peak_mib": peak / 2**20, "extra_mib": (peak - before) / 2**20, "seconds": seconds}


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def in_subprocess(size: int, kernel: str, amp: str, device: str, threads: int | None) -> dict[str, float]:
    """Run :func:`measure_one` in a fresh interpreter."""
    args = [sys.executable, __file__, "--one", str(size), kernel, amp, "--device", device]
    if threads:
        args += ["--threads", str(threads)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"size {size} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 48, 64, 80, 96])
    parser.add_argument("--loop-sizes", type=int, nargs="*", default=[64], help="sizes also run with the loop MoV")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", nargs=3, metavar=("SIZE", "KERNEL", "AMP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_threads(args.threads)
    if args.one:
        size, kernel, amp = args.one
        print(json.dumps(measure_one(int(size), kernel, amp, torch.device(args.device))))
        return
    print(heading("3D training memory"))
    rows, points = [], []
    runs = [(s, "fast") for s in args.sizes] + [(s, "loop") for s in args.loop_sizes]
    for size, kernel in runs:
        result = in_subprocess(size, kernel, args.amp, args.device, args.threads)
        rows.append(
            [
                f"{size}^3",
                kernel,
                f"{result['peak_mib']:.0f}",
                f"{result['extra_mib']:.0f}",
                f"{result['seconds']:.1f}",
            ]
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
        if kernel == "fast":
            points.append((size**3, result["peak_mib"]))
    print(
        markdown_table(
            ["patch", "MoV", "peak RSS MiB (process)", "peak extra MiB (iteration)", "seconds / iteration"], rows
        )
    )
    if len(points) >= 2:
        voxels, peaks = np.array(points, dtype=float).T
        big = voxels >= np.median(voxels)  # the larger sizes, where activations dominate
        slope, intercept = np.polyfit(voxels[big], peaks[big], 1)
        budget = args.budget_gib * 1024
        largest = int(((budget - intercept) / slope) ** (1 / 3))
        largest16 = largest - largest % 16
        print(
            f"\nLinear fit over the sizes >= {int(round(np.median(voxels) ** (1 / 3)))}^3: peak RSS = "
            f"{intercept:.0f} MiB + {slope * 1e6:.1f} MiB per million voxels. **Extrapolated** largest cubic "
            f"patch within {args.budget_gib:g} GiB: about {largest}^3, i.e. {largest16}^3 as a multiple of 16 "
            f"(predicted peak {intercept + slope * largest16**3:.0f} MiB; not run on this machine)."
        )
    print(f"\nLoad average after: {load_average()}")


if __name__ == "__main__":
    main()
