"""Shared helpers of the benchmark scripts: timing statistics, peak memory, machine description.

Timings are wall-clock seconds of whole calls after warm-up; each row reports the median, min and
max over the repeats. Peak memory on CPU is the process's peak resident set size (``VmHWM``)
above the resident size just before the measured call, with the peak reset through
``/proc/self/clear_refs``; on CUDA it is ``torch.cuda.max_memory_allocated`` above the memory
allocated before the call.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent


@dataclass
class Timing:
    """Median, min and max seconds over ``repeats`` calls."""

    median: float
    min: float
    max: float
    repeats: int

    def ms(self) -> str:
        """``median (min-max)`` in milliseconds."""
        return f"{1e3 * self.median:.1f} ({1e3 * self.min:.1f}-{1e3 * self.max:.1f})"


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        fn: The call to time.
        repeats: Timed calls.
        warmup: Untimed calls first.
        device: Synchronised before and after each call when CUDA.

    Returns:
        The :class:`Timing`.
    """
    device = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - tic)
    return Timing(statistics.median(seconds), min(seconds), max(seconds), repeats)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Peak memory in MiB that ``fn()`` adds on top of what is in use before it.

    On CPU: peak RSS (``VmHWM``, reset first) minus the RSS before the call, so run it in a
    fresh process for clean numbers (freed memory the allocator keeps counts as in use). On
    CUDA: ``max_memory_allocated`` minus ``memory_allocated`` before.

    Args:
        fn: The call to measure.
        device: Where it runs.

    Returns:
        MiB.
    """
    device = device or torch.device("cpu")
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """One Markdown paragraph: CPU model, cores, memory, torch, threads, GPU."""
    model = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"CPU {model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; GPU {gpu}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    )


def command_line() -> str:
    """The command that ran this script, for the results file."""
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT.parent), *sys.argv[1:]])


def heading(title: str) -> str:
    """Markdown section start: title, command, machine and the load average before the run."""
    lines = [
        f"## {title}",
        f"Command: `{command_line()}`",
        f"Machine: {machine()}",
        f"Load average before: {load_average()}",
    ]
    return "\n\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def setup_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when given."""
    if threads:
        torch.set_num_threads(threads)
