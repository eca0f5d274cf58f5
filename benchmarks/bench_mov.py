"""Benchmark the MoV kernel against the plain loop oracle (and the earlier unfold kernel).

For each case (2D: B=2, C=32, r=2 at 48, 96, 192; 3D: B=1, C=32 at 24, 48; heads 4 and 1) it

* checks that the fast kernel's output and input gradients equal the loop oracle's (fp32),
* times the forward pass and forward+backward (median, min, max over repeats after warm-up),
* measures the peak extra memory of one forward+backward in a fresh subprocess per kernel.

Run ``python benchmarks/bench_mov.py --help`` for options; the Markdown it prints is what
``benchmarks/RESULTS.md`` records.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from common import heading, load_average, markdown_table, peak_memory, setup_threads, time_call

from cover.nn.mov import mixture_of_vectors
from cover.nn.mov_reference import loop_mov, unfold_mov

KERNELS = {"fast": mixture_of_vectors, "loop": loop_mov, "unfold": unfold_mov}
RADIUS = 2
CHANNELS = 32


def inputs(dims: int, size: int, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key ``(B, 32, *[size]*dims)`` with B = 2 in 2D and 1 in 3D."""
    batch = 2 if dims == 2 else 1
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, CHANNELS, *([size] * dims))
    return torch.randn(shape, generator=generator).to(device), torch.randn(shape, generator=generator).to(device)


def forward_backward(kernel, q: torch.Tensor, k: torch.Tensor, heads: int, weight: torch.Tensor):
    """One forward+backward; returns the output and the two input gradients."""
    q = q.detach().requires_grad_()
    k = k.detach().requires_grad_()
    out = kernel(q, k, heads, RADIUS)
    (out * weight).sum().backward()
    return out.detach(), q.grad, k.grad


def max_differences(q: torch.Tensor, k: torch.Tensor, heads: int) -> tuple[float, float]:
    """Largest absolute difference fast vs loop in the output and in the gradients."""
    weight = torch.randn((q.shape[0], q.dim() - 2, *q.shape[2:]), generator=torch.Generator().manual_seed(1))
    fast = forward_backward(mixture_of_vectors, q, k, heads, weight.to(q.device))
    slow = forward_backward(loop_mov, q, k, heads, weight.to(q.device))
    out = float((fast[0] - slow[0]).abs().max())
    grads = max(float((a - b).abs().max()) for a, b in zip(fast[1:], slow[1:], strict=True))
    return out, grads


def memory_one(kernel: str, dims: int, size: int, heads: int, device: str) -> float:
    """Peak extra MiB of one forward+backward (meant to run in a fresh process)."""
    small_q, small_k = inputs(dims, 8, device=device)  # initialise the libraries' own buffers first
    forward_backward(
        KERNELS[kernel], small_q, small_k, heads, torch.ones((small_q.shape[0], dims, *[8] * dims), device=device)
    )
    q, k = inputs(dims, size, device=device)
    weight = torch.ones((q.shape[0], dims, *q.shape[2:]), device=device)
    return peak_memory(lambda: forward_backward(KERNELS[kernel], q, k, heads, weight), torch.device(device))


def memory_in_subprocess(kernel: str, dims: int, size: int, heads: int, device: str, threads: int | None) -> float:
    """Run :func:`memory_one` in a fresh interpreter and return its MiB."""
    args = [sys.executable, __file__, "--memory-one", kernel, str(dims), str(size), str(heads), "--device", device]
    if threads:
        args += ["--threads", str(threads)]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-2d", type=int, nargs="*", default=[48, 96, 192])
    parser.add_argument("--sizes-3d", type=int, nargs="*", default=[24, 48])
    parser.add_argument("--heads", type=int, nargs="*", default=[4, 1])
    parser.add_argument("--kernels", nargs="*", default=["fast", "loop", "unfold"], choices=list(KERNELS))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (3D 48^3: at most 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    parser.add_argument("--memory-one", nargs=4, metavar=("KERNEL", "DIMS", "SIZE", "HEADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_threads(args.threads)
    if args.memory_one:
        kernel, dims, size, heads = args.memory_one
        print(json.dumps({"mib": memory_one(kernel, int(dims), int(size), int(heads), args.device)}))
        return
    device = torch.device(args.device)
    print(heading("MoV kernel"))
    rows, ratios = [], []
    cases = [(2, s) for s in args.sizes_2d] + [(3, s) for s in args.sizes_3d]
    for dims, size in cases:
        for heads in args.heads:
            q, k = inputs(dims, size, device=args.device)
            diff_out, diff_grad = max_differences(q, k, heads)
            repeats = min(args.repeats, 3) if q[0, 0].numel() > 64**3 // 2 else args.repeats
            weight = torch.ones((q.shape[0], dims, *q.shape[2:]), device=device)
            medians = {}
            for name in args.kernels:
                kernel, data = KERNELS[name], (q, k, heads)
                with torch.no_grad():
                    fwd = time_call(lambda f=kernel, a=data: f(*a, RADIUS), repeats, device=device)
                both = time_call(lambda f=kernel, a=data, w=weight: forward_backward(f, *a, w), repeats, device=device)
                medians[name] = both.median
                mib = (
                    "-"
                    if args.no_memory
                    else f"{memory_in_subprocess(name, dims, size, heads, args.device, args.threads):.0f}"
                )
                case = f"{dims}D {size}^{dims} B={q.shape[0]} J={heads}"
                rows.append([case, name, fwd.ms(), both.ms(), mib])
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
            if "loop" in medians:
                ratios.append(
                    [
                        f"{dims}D {size}^{dims} J={heads}",
                        f"{medians['loop'] / medians['fast']:.2f}x",
                        f"{diff_out:.1e}",
                        f"{diff_grad:.1e}",
                    ]
                )
    header = ["case", "kernel", "forward ms, median (min-max)", "fwd+bwd ms, median (min-max)", "peak extra MiB"]
    print(markdown_table(header, rows))
    print()
    header = ["case", "fwd+bwd speed-up loop/fast", "max abs diff output", "max abs diff grads"]
    print(markdown_table(header, ratios))
    print(f"\nLoad average after: {load_average()}")


if __name__ == "__main__":
    main()
