"""Built-in demo data: the MNI152 2009 T1 template that nilearn installs (docs/method.md §13).

It is one real MRI volume (197 x 233 x 189 at 1 mm, RAS). The demo trains in 2D on axial
slices (array axis 2) or in 3D on patches of the template at 2 mm. Fixed slabs of axial
slices keep pretraining, fine-tuning and testing apart:

* :data:`TEST_SLAB` (z in [100, 110)) is never used for pretraining; the demo's held-out
  view pairs and the downstream test come from it;
* :data:`FINETUNE_SLAB` (z in [70, 78)) gives the few labeled slices of the downstream demo,
  22 slices away from the test slab;
* :data:`PRETRAIN_RANGE` (z in [20, 150)) minus the test slab is pretraining data.

No labeled multi-subject set exists offline; this is one template, so the demo shows that
the machinery works and learns, not clinical performance.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812
from torch.utils.data import Dataset

from cover.errors import DataError

PRETRAIN_RANGE = (20, 150)
FINETUNE_SLAB = (70, 78)
TEST_SLAB = (100, 110)
SLICE_AXIS = 2
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def mni_path(kind: str = "t1") -> Path:
    """Path of an MNI152 file installed with nilearn.

    Args:
        kind: ``"t1"``, ``"gm"`` or ``"wm"``.

    Returns:
        The ``.nii.gz`` path.
    """
    spec = importlib.util.find_spec("nilearn")  # locate without importing (slow) nilearn
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo needs nilearn (pip install nilearn)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / _FILES[kind]
    if not path.is_file():
        raise DataError(f"{path}: MNI152 file missing from the nilearn installation")
    return path


@lru_cache(maxsize=4)
def load_mni(kind: str = "t1") -> np.ndarray:
    """Load an MNI152 volume, RAS, 1 mm, float32 in [0, 1].

    Read through the data layer; the T1 is scaled by the ``mri`` preset (0.5-99.5 percentiles
    to [0, 1]); probability maps are divided by their maximum.

    Args:
        kind: ``"t1"``, ``"gm"`` or ``"wm"``.

    Returns:
        ``(197, 233, 189)`` array (read-only; copy before changing it).
    """
    from cover.data.presets import normalize
    from cover.data.readers import read_image

    data = read_image(mni_path(kind)).array[0]  # RAS-canonical, 1 mm
    if kind == "t1":
        data = normalize(data, "mri")
    else:
        data = np.clip(data / max(float(data.max()), 1e-6), 0.0, 1.0)
    data = np.ascontiguousarray(data, dtype=np.float32)
    data.setflags(write=False)
    return data


def mni_tissue_labels() -> np.ndarray:
    """Four-class tissue labelling of the template: 0 background, 1 CSF, 2 GM, 3 WM.

    GM and WM come from nilearn's probability maps; the brain mask is where GM + WM + a CSF
    proxy (dark voxels inside the smoothed GM/WM hull) is present. A voxel takes the class of
    the largest of (CSF proxy, GM, WM) when that is above 0.5 in the mask, else background.

    Computed once per process (about 2 s); each call returns a fresh, writable copy.

    Returns:
        ``(197, 233, 189)`` int64 labels.
    """
    return _tissue_labels().copy()


@lru_cache(maxsize=1)
def _tissue_labels() -> np.ndarray:
    from scipy import ndimage

    gm, wm = load_mni("gm"), load_mni("wm")
    tissue = gm + wm
    hull = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.2, iterations=3))
    csf = np.clip(hull.astype(np.float32) - gm - wm, 0.0, 1.0)
    stacked = np.stack([csf, gm, wm])
    labels = stacked.argmax(axis=0) + 1
    labels[(stacked.max(axis=0) < 0.5) | ~hull] = 0
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return labels


def axial_slices(volume: np.ndarray, z_values: list[int] | range, size: tuple[int, int]) -> torch.Tensor:
    """Axial slices padded to square and resized.

    Args:
        volume: ``(X, Y, Z)`` array.
        z_values: Slice indices along axis 2.
        size: Output ``(H, W)``.

    Returns:
        ``(N, 1, H, W)`` float32 tensor.
    """
    slices = torch.from_numpy(np.ascontiguousarray(volume[:, :, list(z_values)])).permute(2, 0, 1)
    side = max(slices.shape[1:])
    pad_x, pad_y = side - slices.shape[1], side - slices.shape[2]
    slices = F.pad(slices, [pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2])
    return F.interpolate(slices.unsqueeze(1).float(), size=tuple(size), mode="bilinear", align_corners=False)


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


def demo_volume_2mm() -> torch.Tensor:
    """The T1 template at 2 mm, ``(1, 99, 117, 95)``."""
    volume = torch.from_numpy(load_mni("t1").copy())[None, None]
    return F.interpolate(volume, size=(99, 117, 95), mode="trilinear", align_corners=False)[0]


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
