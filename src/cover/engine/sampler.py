"""Step-indexed batch sampling: the batch of step ``s`` depends only on ``(seed, s)``.

Because no sampler state carries from one step to the next, resuming at step ``s`` (after a
crash, or with another number of processes) replays exactly the batches an uninterrupted run
would have seen. Each item key is ``(image index, item seed)``; datasets draw their own random
choices (slice, patch position) from the item seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def step_batch(seed: int, step: int, batch_size: int, num_items: int) -> list[tuple[int, int]]:
    """The global batch of one step.

    Args:
        seed: Run seed.
        step: Optimiser step (0-based).
        batch_size: Global batch size.
        num_items: Dataset length.

    Returns:
        ``batch_size`` keys ``(index, item_seed)``.
    """
    rng = np.random.default_rng([seed, step, 0x5EED])
    indices = rng.integers(0, num_items, size=batch_size)
    seeds = rng.integers(0, 2**31 - 1, size=batch_size)
    return [(int(i), int(s)) for i, s in zip(indices, seeds, strict=True)]


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this process's share of the global batch for steps ``start … total - 1``.

    Args:
        seed: Run seed.
        batch_size: Global batch size (divisible by ``world_size``).
        num_items: Dataset length.
        start_step: First step to yield.
        total_steps: One past the last step.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self,
        seed: int,
        batch_size: int,
        num_items: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.seed, self.batch_size, self.num_items = seed, batch_size, num_items
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.batch_size // self.world_size
        for step in range(self.start_step, self.total_steps):
            keys = step_batch(self.seed, step, self.batch_size, self.num_items)
            yield keys[self.rank * local : (self.rank + 1) * local]
