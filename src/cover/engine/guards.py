"""Guards shared by the training loops: clean stops on SIGTERM/SIGINT, and non-finite steps.

Both ``cover pretrain`` and ``cover finetune`` use them the same way: a first SIGTERM or
SIGINT lets the current step finish, the loop writes a checkpoint and stops with a message
that says how to resume (a second signal stops at once); a step whose loss or gradient is
not finite is skipped and counted, and too many in a row abort the run with a clear message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from cover.errors import CoverError, TrainingInterrupted

log = logging.getLogger(__name__)


@contextlib.contextmanager
def summary_if_interrupted(summary: dict[str, Any], path: Path, what: str) -> Iterator[None]:
    """Around a run's final evaluation: on Ctrl-C, still write ``summary`` (marked interrupted) to ``path``.

    Training is finished and its checkpoints are written when the final evaluation starts, so
    an interruption there loses only the evaluation: the summary says so and the run stops with
    one line (:class:`cover.errors.TrainingInterrupted`, exit status 130).

    Args:
        summary: The run summary so far (``final_evaluation`` is added).
        path: ``OUT/summary.json``.
        what: The evaluation, in words (``the endpoint error``).
    """
    from cover.runtime import json_safe

    try:
        yield
    except KeyboardInterrupt:
        summary["final_evaluation"] = f"interrupted: {what} was not computed"
        path.write_text(json.dumps(json_safe(summary), indent=2))
        raise TrainingInterrupted(
            f"interrupted during the final evaluation ({what}); training finished, its checkpoints and "
            f"{path} (marked interrupted) are written"
        ) from None


class StopSignals:
    """Context manager that turns the first SIGTERM/SIGINT into a stop request.

    Inside the ``with`` block, the first signal sets :attr:`requested` (the loop checks it
    after each step); a second one raises ``KeyboardInterrupt`` at once. The previous
    handlers come back on exit. Outside the main thread (where handlers cannot be installed)
    it does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signum is not None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class NonFiniteGuard:
    """Count steps with a non-finite loss or gradient; abort after too many in a row.

    Args:
        limit: Consecutive non-finite steps that abort the run.
        out: Output folder named in the abort message (its last good checkpoint is kept).
        verbose: Print a warning for every skipped step (rank 0 of a distributed run).
        skipped: Non-finite steps counted before (restored from a checkpoint).
    """

    def __init__(self, limit: int, out: Any, verbose: bool = True, skipped: int = 0) -> None:
        self.limit = limit
        self.out = out
        self.verbose = verbose
        self.skipped = skipped
        self.consecutive = 0

    @staticmethod
    def finite(*values: float) -> bool:
        """Whether every value is finite."""
        return all(math.isfinite(v) for v in values)

    def check(self, bad: bool, step: int) -> bool:
        """Record one step's outcome.

        Args:
            bad: Whether the step's loss or gradient was not finite (on any rank).
            step: 1-based step number, for messages.

        Returns:
            ``True`` when the step may be applied, ``False`` when it must be skipped.

        Raises:
            CoverError: ``limit`` consecutive steps were not finite.
        """
        if not bad:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        if self.verbose:
            log.warning(
                "step %d: non-finite loss or gradient, step skipped (%d in a row, abort at %d)",
                step,
                self.consecutive,
                self.limit,
            )
        if self.consecutive >= self.limit:
            raise CoverError(
                f"aborting at step {step}: {self.consecutive} consecutive non-finite steps "
                f"(lower --lr or check the data); the last good checkpoint in {self.out} is kept"
            )
        return False
