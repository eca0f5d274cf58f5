"""The MNI152 2009 T1 template that nilearn installs, its labels and its slices (docs/method.md §13).

It is one real MRI volume (197 x 233 x 189 at 1 mm, RAS), the source of every built-in data
set (:mod:`cover.data.demo`). The demo trains in 2D on axial slices (array axis 2) or in 3D on
patches of the template at 2 mm. Fixed slabs of axial slices keep pretraining, fine-tuning and
testing apart:

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

from cover.errors import DataError

PRETRAIN_RANGE = (20, 150)
FINETUNE_SLAB = (70, 78)
TEST_SLAB = (100, 110)
SLICE_AXIS = 2
TISSUE_NAMES = ("background", "CSF", "GM", "WM")
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
    """Four-class tissue labelling of the template (:data:`TISSUE_NAMES`): 0 background, 1 CSF, 2 GM, 3 WM.

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


def demo_volume_2mm() -> torch.Tensor:
    """The T1 template at 2 mm, ``(1, 99, 117, 95)``."""
    volume = torch.from_numpy(load_mni("t1").copy())[None, None]
    return F.interpolate(volume, size=(99, 117, 95), mode="trilinear", align_corners=False)[0]


#: Array index of the MNI origin (0, 0, 0 mm) in the 1 mm template.
_ORIGIN = (98, 134, 72)
REGION_NAMES = ("background", "left GM", "right GM", "left WM", "right WM", "ventricles")


def region_labels() -> np.ndarray:
    """Anatomical regions of the 1 mm template (:data:`REGION_NAMES`).

    From the tissue labels (:func:`mni_tissue_labels`): GM and WM split into
    left and right hemisphere at the midline of the symmetric template (x = 0 mm, array index
    98; left = x < 0 mm), and the lateral ventricles: the largest connected CSF component in
    the box |x| < 30 mm, -45 <= y < 35 mm, -5 <= z < 35 mm. Everything else (sulcal and
    outer CSF, non-brain) is background.

    Returns:
        ``(197, 233, 189)`` int64 labels 0-5.
    """
    from scipy import ndimage

    tissue = mni_tissue_labels()
    x = np.arange(tissue.shape[0])[:, None, None] - _ORIGIN[0]
    left = x < 0
    regions = np.zeros_like(tissue)
    regions[(tissue == 2) & left] = 1
    regions[(tissue == 2) & ~left] = 2
    regions[(tissue == 3) & left] = 3
    regions[(tissue == 3) & ~left] = 4
    box = np.zeros(tissue.shape, dtype=bool)
    (ox, oy, oz) = _ORIGIN
    box[ox - 30 : ox + 30, oy - 45 : oy + 35, oz - 5 : oz + 35] = True
    components, count = ndimage.label((tissue == 1) & box)
    if count:
        sizes = ndimage.sum(np.ones_like(components), components, range(1, count + 1))
        regions[components == int(np.argmax(sizes)) + 1] = 5
    return regions
