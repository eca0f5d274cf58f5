"""A clock that advances one second per reading, to test elapsed-time bookkeeping exactly."""

from __future__ import annotations

import time
from typing import Any


class SteppingTime:
    """Stands in for a module's ``time``: ``monotonic()`` moves 1 s per call, the rest is real.

    A fresh instance starts at 0, as a new process would after a resume.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
