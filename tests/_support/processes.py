"""Real ``python -m cover`` subprocesses for the crash-safety tests, and real signals to them.

Shared by ``tests/pretraining/test_reliability.py`` and ``tests/downstream/test_finetune_reliability.py``
(``tests`` is on ``sys.path`` through pytest's ``pythonpath`` setting).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: One thread per process: several runs go concurrently on a 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``command`` in a new session, so a signal can go to its whole process group."""
    return subprocess.Popen(
        command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(process: subprocess.Popen, timeout: float = 300.0) -> tuple[int, str]:
    """Wait for ``process``; its exit status and standard error."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def terminate_group(process: subprocess.Popen) -> Callable[[], None]:
    """SIGTERM to the process group (main process and workers), as a scheduler sends it."""
    return lambda: os.killpg(process.pid, signal.SIGTERM)


def kill(process: subprocess.Popen) -> Callable[[], None]:
    """SIGKILL to the main process."""
    return lambda: process.send_signal(signal.SIGKILL)


def act_when_written(plan: dict[str, tuple[Path, subprocess.Popen, Callable[[], None]]], timeout: float = 300) -> None:
    """For each ``name: (file, process, action)``, run ``action`` as soon as ``file`` exists.

    Raises:
        AssertionError: A process ended, or the timeout passed, before its file appeared.
    """
    pending = dict(plan)
    deadline = time.monotonic() + timeout
    while pending:
        for name, (path, process, action) in list(pending.items()):
            if path.exists():
                action()
                del pending[name]
            elif process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{name} run ended or stalled before {path.name}:\n{process.stderr.read()}")
        time.sleep(0.02)


def interruption_line(stderr: str) -> str:
    """The line an interrupted run printed (``interrupted at step N; ...; continue with: ...``), or ``""``."""
    return next((line for line in stderr.splitlines() if "interrupted" in line), "")


def resume_command(line: str) -> list[str]:
    """``python -m cover ...`` from the ``continue with: cover ...`` part of ``line`` (nothing after
    ``cover`` when the line has none, which fails the test's later checks)."""
    command = line.split("continue with: cover ", 1)[1] if "continue with: cover " in line else ""
    return [sys.executable, "-m", "cover", *shlex.split(command)]
