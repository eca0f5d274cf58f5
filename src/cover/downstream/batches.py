"""Training batches drawn statelessly from ``(seed, step)``: the same seed gives the same run.

Cases are visited epoch by epoch in an order drawn per epoch. Segmentation cases are cropped
to the training size (zero-padded, label 0, where the image is smaller), centred on a random
labeled voxel with probability ``foreground_prob`` and placed uniformly otherwise.
Classification cases are already resized to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cover.downstream.loading import LoadedCase

#: Labeled voxels remembered per case for foreground-centred crops.
_MAX_POINTS = 20_000


class BatchSampler:
    """Deterministic training batches.

    Args:
        cases: Loaded training cases.
        batch_size: Cases per batch.
        size: Crop size per spatial axis (segmentation).
        seed: Run seed.
        foreground_prob: Probability of a crop centred on a labeled voxel (segmentation).
    """

    def __init__(
        self, cases: list[LoadedCase], batch_size: int, size: Sequence[int], seed: int, foreground_prob: float = 0.5
    ) -> None:
        self.cases = cases
        self.batch_size = batch_size
        self.size = tuple(int(s) for s in size)
        self.seed = seed
        self.foreground_prob = foreground_prob
        rng = np.random.default_rng([seed, 0xF06])
        self.points = []
        for case in cases:
            points = np.argwhere(case.label.numpy() > 0) if case.label is not None else np.zeros((0, len(self.size)))
            if len(points) > _MAX_POINTS:
                points = points[rng.choice(len(points), _MAX_POINTS, replace=False)]
            self.points.append(points)

    def indices(self, step: int) -> list[int]:
        """Case indices of the batch of ``step`` (0-based)."""
        n, out = len(self.cases), []
        for slot in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, position = divmod(slot, n)
            out.append(int(np.random.default_rng([self.seed, epoch, 0xE90C]).permutation(n)[position]))
        return out

    def _crop(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[index]
        spatial = case.image.shape[1:]
        points = self.points[index]
        if len(points) and rng.random() < self.foreground_prob:
            centre = points[rng.integers(len(points))]
            start = [int(c) - s // 2 for c, s in zip(centre, self.size, strict=True)]
            start = [
                min(max(st, min(0, n - s)), max(0, n - s)) for st, n, s in zip(start, spatial, self.size, strict=True)
            ]
        else:
            start = [
                int(rng.integers(min(0, n - s), max(0, n - s) + 1)) for n, s in zip(spatial, self.size, strict=True)
            ]
        image = torch.zeros((case.image.shape[0], *self.size), dtype=case.image.dtype)
        label = torch.zeros(self.size, dtype=torch.int64)
        src, dst = [], []
        for st, n, s in zip(start, spatial, self.size, strict=True):
            a, b = max(st, 0), min(st + s, n)
            src.append(slice(a, b))
            dst.append(slice(a - st, b - st))
        image[(slice(None), *dst)] = case.image[(slice(None), *src)]
        label[tuple(dst)] = case.label[tuple(src)]
        return image, label

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step``.

        Returns:
            Segmentation: images ``(B, C, *size)`` and labels ``(B, *size)`` int64;
            classification: images ``(B, C, *size)`` and targets ``(B,)`` int64.
        """
        chosen = self.indices(step)
        if self.cases[0].label is None:
            images = torch.stack([self.cases[i].image for i in chosen])
            targets = torch.tensor([self.cases[i].case.target for i in chosen], dtype=torch.int64)
            return images, targets
        rng = np.random.default_rng([self.seed, step, 0xC809])
        crops = [self._crop(i, rng) for i in chosen]
        return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])
