"""Learning-rate schedules: linear warm-up, then cosine decay or constant.

Cosine decay is really applied (docs/method.md §8 and §11 D1); the constant schedule is for
fine-tuning ended by early stopping, where the step count is only a safety cap.
"""

from __future__ import annotations

import math

#: Learning-rate schedules after the warm-up: cosine decay to 0 at the last step, or constant.
LR_SCHEDULES = ("cosine", "constant")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Args:
        step: Current optimiser step.
        total_steps: Total steps of the run.
        warmup_steps: Steps of linear warm-up from ``1/warmup_steps`` to 1.
        final_fraction: Multiplier reached at the last step.

    Returns:
        A factor in ``[final_fraction, 1]``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_constant(step: int, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based): linear warm-up, then 1.

    The schedule does not depend on the run's length, so a run that stops early follows
    the same learning rates as a longer one up to its stop.

    Args:
        step: Current optimiser step.
        warmup_steps: Steps of linear warm-up from ``1/warmup_steps`` to 1.

    Returns:
        A factor in ``(0, 1]``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0
