"""Benchmark one full COVER pretraining iteration, with the loop MoV oracle and the fast kernel.

An iteration is what ``cover pretrain`` does per step: SeVR views of a batch (batched, on the
device), the U-Net on both views, VPA, the vector and consistency losses, backward, gradient
clipping and an Adam step. Cases:

* 2D: B=2, 128x128, default U-Net, fp32 and bf16 autocast (``--amp bf16``), loop vs fast MoV;
* 3D: B=1, 64^3, fp32, loop vs fast MoV.

The MoV kernel is swapped by replacing ``cover.nn.mov.mixture_of_vectors`` (what
:class:`~cover.nn.mov.MixtureOfVectors` calls) with the loop oracle. Source images are random
(the cost does not depend on their content).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import torch
from common import heading, load_average, markdown_table, setup_threads, time_call

import cover.nn.mov as mov
from cover.config import resolve_pretrain_config
from cover.nn.mov_reference import loop_mov
from cover.train.pretrain import build_model, source_size
from cover.views import ViewGenerator

KERNELS = {"fast": mov.mixture_of_vectors, "loop": loop_mov}


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

    def __init__(self, dim: int, size: int, batch: int, amp: str, device: torch.device, channels_last: bool = False):
        torch.manual_seed(0)
        self.config = resolve_pretrain_config({"dim": dim, "size": size, "batch_size": batch, "amp": amp})
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


def run_case(dim: int, size: int, batch: int, amp: str, kernel: str, repeats: int, device, channels_last: bool):
    """Time ``repeats`` iterations (after one warm-up) with the given MoV kernel."""
    mov.mixture_of_vectors = KERNELS[kernel]
    try:
        iteration = Iteration(dim, size, batch, amp, device, channels_last)
        return time_call(iteration, repeats, warmup=1, device=device)
    finally:
        mov.mixture_of_vectors = KERNELS["fast"]


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
    args = parser.parse_args()
    setup_threads(args.threads)
    device = torch.device(args.device)
    print(heading("Training iteration"))
    rows, medians = [], {}
    for case in args.cases:
        dim, size, batch, amp, kernel, *layout = case.split(":")
        dim, size, batch = int(dim), int(size), int(batch)
        channels_last = args.channels_last or layout == ["cl"]
        repeats = args.repeats if dim == 2 else min(3, args.repeats)
        timing = run_case(dim, size, batch, amp, kernel, repeats, device, channels_last)
        medians[case] = timing.median
        precision = ("fp32" if amp == "none" else amp) + (", channels-last" if channels_last else "")
        rows.append([f"{dim}D {size}^{dim} B={batch}", precision, kernel, timing.ms()])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    baseline = {f"{c.split(':')[0]}:{c.split(':')[1]}": medians[c] for c in medians if c.endswith(":none:loop")}
    for row, case in zip(rows, medians, strict=True):
        base = baseline.get(":".join(case.split(":")[:2]))
        row.append(f"{base / medians[case]:.2f}x" if base else "-")
    header = ["case", "precision", "MoV", "iteration ms, median (min-max)", "speed-up vs fp32 + loop MoV"]
    print(markdown_table(header, rows))
    print(f"\nLoad average after: {load_average()}")


if __name__ == "__main__":
    main()
