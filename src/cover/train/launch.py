"""``--devices N``: relaunch the same command under ``torchrun`` with N local processes."""

from __future__ import annotations

import subprocess
import sys


def strip_devices(argv: list[str]) -> list[str]:
    """Command-line arguments without ``--devices N`` / ``--devices=N``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--devices":
            skip = True
            continue
        if arg.startswith("--devices="):
            continue
        kept.append(arg)
    return kept


def launch_local(processes: int, argv: list[str]) -> int:
    """Run ``torchrun --standalone --nproc_per_node=N -m cover ARGS`` and wait for it.

    Args:
        processes: Number of processes on this machine.
        argv: The ``cover`` arguments (``--devices`` is removed).

    Returns:
        torchrun's exit status.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "cover",
        *strip_devices(argv),
    ]
    return subprocess.call(command)
