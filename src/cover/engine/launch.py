"""``--devices N``: relaunch the same command under ``torchrun`` with N local processes.

``cover pretrain --devices N ARGS`` runs what ``torchrun --standalone --nproc_per_node=N -m
cover pretrain ARGS`` runs (the elastic launcher runs in this process). When a process fails,
the others are stopped and the exit status is the failed process's own (2 for an ``error:``
line it printed, 130 after an interruption), without torchrun's traceback.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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


def torchrun_args(processes: int, argv: list[str]) -> list[str]:
    """The ``torchrun`` arguments that run ``cover ARGS`` in ``processes`` local processes.

    Args:
        processes: Number of processes on this machine.
        argv: The ``cover`` arguments (``--devices`` is removed).

    Returns:
        Arguments for ``torch.distributed.run``.
    """
    return ["--standalone", f"--nproc_per_node={processes}", "-m", "cover", *strip_devices(argv)]


def launch_local(processes: int, argv: list[str]) -> int:
    """Run ``torchrun --standalone --nproc_per_node=N -m cover ARGS`` and wait for it.

    Args:
        processes: Number of processes on this machine.
        argv: The ``cover`` arguments (``--devices`` is removed).

    Returns:
        0 on success, else the exit status of the first process that failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The processes print their own one-line errors; torchrun's log lines (the OMP_NUM_THREADS
    # banner, "failed (exitcode: 2)", closing signals) would only repeat them with timestamps.
    for name in ("torch.distributed.run", "torch.distributed.elastic"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(torchrun_args(processes, argv)))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        code = failure.exitcode
        if code < 0:  # killed by a signal
            log.error("process %s was killed by signal %d", rank, -code)
            return 1
        return code or 1
    return 0
