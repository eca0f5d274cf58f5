"""The demo's unlabeled pretraining images: slices or 2 mm patches of the MNI152 template.

:func:`demo_datasets` serves what ``cover pretrain`` trains on without ``--data``: in 2D the
axial slices of :data:`~cover.data.demo.template.PRETRAIN_RANGE` minus the test slab, held-out
view pairs from :data:`~cover.data.demo.template.TEST_SLAB`; in 3D random patches of the
template at 2 mm.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cover.data.demo.template import PRETRAIN_RANGE, TEST_SLAB, axial_slices, demo_volume_2mm, load_mni


def pretrain_slice_indices() -> list[int]:
    """Axial slices used for demo pretraining: :data:`PRETRAIN_RANGE` minus :data:`TEST_SLAB`."""
    return [z for z in range(*PRETRAIN_RANGE) if not TEST_SLAB[0] <= z < TEST_SLAB[1]]


class TensorImages(Dataset):
    """Pre-computed images served with the trainer's ``(index, seed)`` key contract.

    Args:
        images: ``(N, C, *source_size)`` tensor.
    """

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        return self.images[key[0]]


class VolumePatches(Dataset):
    """Random patches of one volume, preferring foreground, deterministic per ``(index, seed)``.

    Args:
        volume: ``(C, *spatial)`` tensor, every axis at least ``patch``.
        patch: Patch size.
        centre_range: Optional ``(low, high)`` per axis limiting patch centres (inclusive low,
            exclusive high); ``None`` allows the whole volume.
        foreground_prob: Probability of centring on a foreground voxel (> 0.1).
        length: Nominal dataset length (patches are drawn freshly for every key).
    """

    def __init__(
        self,
        volume: torch.Tensor,
        patch: tuple[int, ...],
        centre_range: list[tuple[int, int]] | None = None,
        foreground_prob: float = 0.9,
        length: int = 1,
    ) -> None:
        self.volume = volume
        self.patch = tuple(patch)
        spatial = volume.shape[1:]
        half = [p // 2 for p in self.patch]
        limits = [(h, s - (p - h)) for h, s, p in zip(half, spatial, self.patch, strict=True)]
        if centre_range is not None:
            limits = [(max(lo, a), min(hi - 1, b)) for (lo, hi), (a, b) in zip(centre_range, limits, strict=True)]
        self.limits = limits
        inside = np.zeros(spatial, dtype=bool)
        inside[tuple(slice(lo, hi + 1) for lo, hi in limits)] = True
        self.foreground = np.argwhere((volume[0].numpy() > 0.1) & inside)
        self.foreground_prob = foreground_prob
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        rng = np.random.default_rng([int(key[0]), int(key[1])])
        if len(self.foreground) and rng.random() < self.foreground_prob:
            centre = self.foreground[rng.integers(len(self.foreground))]
        else:
            centre = [rng.integers(lo, hi + 1) for lo, hi in self.limits]
        start = [int(c) - p // 2 for c, p in zip(centre, self.patch, strict=True)]
        index = (slice(None),) + tuple(slice(s, s + p) for s, p in zip(start, self.patch, strict=True))
        return self.volume[index].clone()


def demo_datasets(dim: int, source_size: tuple[int, ...]) -> tuple[Dataset, Dataset, dict]:
    """Training and held-out datasets for the built-in demo.

    Args:
        dim: 2 (axial slices) or 3 (patches at 2 mm).
        source_size: Size of the images handed to the view generator.

    Returns:
        ``(train, heldout, metadata)``; both datasets follow the ``(index, seed)`` contract.
    """
    volume = load_mni("t1")
    metadata = {
        "source": "MNI152 2009c T1 template (nilearn)",
        "preset": "mri",
        "orientation": "RAS",
        "axis_order": "array axes (x, y, z) of the RAS-canonical volume",
        "in_channels": 1,
    }
    if dim == 2:
        train = TensorImages(axial_slices(volume, pretrain_slice_indices(), source_size))
        heldout = TensorImages(axial_slices(volume, range(*TEST_SLAB), source_size))
        metadata.update(spacing=[233 / source_size[0], 233 / source_size[1]], slices="axial")
        return train, heldout, metadata
    vol2 = demo_volume_2mm()
    spatial = vol2.shape[1:]
    low, high = TEST_SLAB[0] // 2, (TEST_SLAB[1] + 1) // 2
    full = [(0, s) for s in spatial]
    # Held-out patches are centred in the test slab; training patches anywhere, so in 3D they
    # overlap it (one template): held-out pairs differ from training by their transforms only.
    heldout = VolumePatches(vol2, source_size, centre_range=full[:2] + [(low, high)], length=1)
    train = VolumePatches(vol2, source_size, length=1)
    metadata.update(spacing=[2.0, 2.0, 2.0])
    return train, heldout, metadata
