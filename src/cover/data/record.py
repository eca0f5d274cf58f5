"""The in-memory image record every reader returns, and its shared geometry helpers.

Conventions (see docs/method.md §2):

- ``array`` is float32 with shape ``(C, *spatial)``; ``spatial`` is ``(H, W)`` for plain 2D
  images and ``(I, J, K)`` for volumes.
- Volumes are brought to the closest RAS canonical voxel order: array axis 0 increases
  towards patient Right (+x), axis 1 towards Anterior (+y), axis 2 towards Superior (+z), as
  close as the acquisition grid allows (``nibabel.as_closest_canonical`` semantics). The
  ``affine`` maps voxel indices ``(i, j, k, 1)`` to RAS world millimetres.
- Plain 2D images (PNG, JPEG, single-frame DICOM, 2D NRRD) keep their display order
  ``(rows, cols)`` and have ``affine=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations

from cover.errors import DataError

#: Largest number of voxels (times channels) a reader accepts before refusing a file.
#: 2**30 float32 voxels are 4 GiB; a header claiming more is treated as corrupt.
MAX_VOXELS = 2**30

#: Matrix that flips between DICOM/ITK LPS world coordinates and NIfTI RAS coordinates.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def data_error(path: str | Path, problem: str) -> DataError:
    """Build a one-line :class:`DataError` naming ``path``.

    Args:
        path: The offending file or folder.
        problem: What is wrong; newlines and repeated spaces are collapsed.

    Returns:
        The error, ready to raise.
    """
    text = " ".join(str(problem).split())
    return DataError(f"{path}: {text}")


@dataclass
class ImageRecord:
    """One decoded image with its geometry.

    Attributes:
        array: float32 pixel/voxel values, shape ``(C, *spatial)``.
        spacing: Voxel size in mm per spatial axis, in array axis order.
        affine: ``(4, 4)`` voxel -> RAS world (mm) matrix for volumes, ``None`` for plain 2D
            images.
        orientation: Axis codes of the array axes (e.g. ``"RAS"``), ``None`` if unknown.
        modality: DICOM-style modality (``"CT"``, ``"MR"``, ``"CR"``, ...) when a header
            states it, else ``None``.
        format: Source format: ``"nifti"``, ``"dicom"``, ``"dicom-series"``, ``"png"``,
            ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"nrrd"``, ``"mha"``, ``"mhd"``, ``"mgh"``,
            ``"npy"`` or ``"npz"``.
        path: The file (or DICOM series folder) it was read from.
        meta: Extra reader information (e.g. ``original_affine`` before reorientation,
            ``series_uid``, ``photometric``); free-form, JSON-friendly values.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    orientation: str | None
    modality: str | None
    format: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial size in array axis order."""
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.array.shape[0])


def check_voxel_count(path: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse a header whose claimed size is absurd before any pixel data is read.

    Args:
        path: File being read (for the message).
        shape: Claimed array shape (any number of axes, channels included).

    Raises:
        DataError: If a dimension is not positive or the total exceeds :data:`MAX_VOXELS`.
    """
    dims = [int(s) for s in shape]
    if not dims or any(s <= 0 for s in dims):
        raise data_error(path, f"header gives an empty or invalid image size {tuple(dims)}")
    total = int(np.prod(np.asarray(dims, dtype=np.float64)))
    if total > MAX_VOXELS:
        size = "x".join(str(s) for s in dims)
        raise data_error(
            path,
            f"header claims an image of {size} = {total:.3g} values, more than the limit "
            f"of {MAX_VOXELS:.3g}; the file is corrupt or not a single image",
        )


def check_finite(path: str | Path, array: np.ndarray) -> None:
    """Refuse arrays holding NaN or infinite values.

    Args:
        path: File being read (for the message).
        array: Any numeric array.

    Raises:
        DataError: If any value is NaN or +-inf.
    """
    if array.size == 0:
        raise data_error(path, "image has no pixels")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise data_error(path, f"contains {bad} NaN or infinite value(s); clean the file before use")


def to_grey(array: np.ndarray) -> np.ndarray:
    """Collapse a trailing colour axis to luminance (ITU-R BT.601 weights).

    Args:
        array: ``(..., S)`` with ``S`` in {1, 2, 3, 4} samples (grey, grey+alpha, RGB, RGBA).

    Returns:
        ``(...)`` float32 luminance.
    """
    samples = array.shape[-1]
    data = array.astype(np.float32, copy=False)
    if samples in (1, 2):
        return data[..., 0]
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    return data[..., :3] @ weights


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size per array axis from a ``(4, 4)`` affine (column norms)."""
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def axis_codes(affine: np.ndarray) -> str:
    """Orientation codes of the array axes of a RAS affine, e.g. ``"RAS"`` or ``"LPS"``."""
    return "".join(orientations.aff2axcodes(affine))


def to_ras_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip a volume to the closest RAS canonical voxel order.

    Same operation as ``nibabel.as_closest_canonical`` on an array already in memory.

    Args:
        data: ``(I, J, K, ...)`` array; trailing axes (e.g. channels) are carried along.
        affine: ``(4, 4)`` voxel -> RAS world matrix of ``data``.

    Returns:
        ``(data_ras, affine_ras)`` with ``data_ras`` of shape ``(I', J', K', ...)``.
    """
    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    out = orientations.apply_orientation(data, ornt)
    new_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape[:3])
    return np.ascontiguousarray(out), new_affine


def volume_record(
    data: np.ndarray,
    affine_ras: np.ndarray,
    *,
    path: Path,
    fmt: str,
    modality: str | None,
    meta: dict[str, Any] | None = None,
) -> ImageRecord:
    """Build a RAS-canonical volume record from channel-last voxel data.

    Args:
        data: ``(I, J, K)`` or ``(I, J, K, C)`` voxel values in the grid of ``affine_ras``.
        affine_ras: ``(4, 4)`` voxel -> RAS world matrix.
        path: Source path.
        fmt: Format name.
        modality: Modality or ``None``.
        meta: Extra metadata; ``original_affine`` and ``original_orientation`` are added.

    Returns:
        The record with ``array`` of shape ``(C, I', J', K')``.
    """
    info = dict(meta or {})
    info.setdefault("original_affine", affine_ras.tolist())
    info.setdefault("original_orientation", axis_codes(affine_ras))
    canon, affine = to_ras_canonical(data, affine_ras)
    if canon.ndim == 3:
        canon = canon[..., None]
    array = np.ascontiguousarray(np.moveaxis(canon, -1, 0), dtype=np.float32)
    check_finite(path, array)
    return ImageRecord(
        array=array,
        spacing=spacing_from_affine(affine),
        affine=affine,
        orientation=axis_codes(affine),
        modality=modality,
        format=fmt,
        path=path,
        meta=info,
    )
