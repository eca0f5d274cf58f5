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


#: Colour samples that differ by at most this fraction of the image's value range still count as
#: one grey value (a grey picture saved as RGB, or as a JPEG whose decoder rounds differently).
GREY_TOLERANCE = 0.01


def single_channel(path: str | Path, values: np.ndarray, *, alpha: bool, kind: str) -> np.ndarray:
    """The one grey channel of ``(..., S)`` samples, or a one-line refusal.

    cover never mixes colours or vector components into grey: the samples are accepted only
    when they carry the same value (within :data:`GREY_TOLERANCE` of the value range), as in a
    grey picture stored as RGB, and a transparency sample only when it is constant. Anything
    else must be read as channels (``in_channels: S``) or converted by the user.

    Args:
        path: The file (for the message).
        values: ``(..., S)`` samples, ``S >= 2``.
        alpha: The last sample is transparency when ``S`` is 2 or 4 (plain images: LA, RGBA).
        kind: What the samples are, for the message (``"an RGB colour image"``).

    Returns:
        ``(...)`` float32: the first sample.

    Raises:
        DataError: The samples differ, or a transparency sample varies.
    """
    samples = int(values.shape[-1])
    data = values.astype(np.float32, copy=False)
    count = samples - 1 if alpha and samples in (2, 4) else samples
    if count < samples:
        transparency = data[..., -1]
        if float(transparency.min()) != float(transparency.max()):
            raise data_error(
                path,
                f"is {kind} with a varying transparency channel; cover does not merge it into grey: save it "
                f"without transparency, or set in_channels: {samples} (--in-channels {samples}) to use all "
                f"{samples} samples as channels",
            )
    grey = data[..., 0]
    if count > 1:
        colour = data[..., :count]
        spread = float(np.abs(colour - grey[..., None]).max())
        value_range = float(colour.max() - colour.min())
        if spread > GREY_TOLERANCE * value_range:
            raise data_error(
                path,
                f"is {kind} whose {samples} samples per pixel differ; cover does not mix them "
                f"into grey: convert it to greyscale yourself, or set in_channels: {samples} "
                f"(--in-channels {samples}) to use the samples as channels",
            )
    return np.ascontiguousarray(grey)


#: Formats without physical geometry: their spacing is reported as 1 and they have no origin
#: or directions to compare.
PLAIN_FORMATS = frozenset({"png", "jpeg", "bmp", "tiff", "npy", "npz"})


def as_planar(record: ImageRecord) -> ImageRecord | None:
    """A 2D view of a volume that is one slice thick (a 2D NIfTI, or a 3D file of shape ``(X, Y, 1)``).

    Args:
        record: Any record.

    Returns:
        ``record`` itself when it is 2D; for a volume with exactly one spatial axis of size 1,
        a 2D record ``(C, A, B)`` (the other two axes in their RAS canonical order) whose
        ``meta["plane_of_volume"]`` keeps ``axis`` (the dropped spatial axis), ``affine`` and
        ``shape`` of the volume, so results can be put back on the volume's grid; ``None``
        for a volume that is not one slice thick.
    """
    if record.spatial_dims == 2:
        return record
    thin = [axis for axis, size in enumerate(record.spatial_shape) if size == 1]
    if record.spatial_dims != 3 or len(thin) != 1:
        return None
    axis = thin[0]
    meta = dict(record.meta)
    meta["plane_of_volume"] = {
        "axis": axis,
        "affine": None if record.affine is None else np.asarray(record.affine).tolist(),
        "shape": list(record.spatial_shape),
    }
    return ImageRecord(
        array=np.ascontiguousarray(np.take(record.array, 0, axis=axis + 1)),
        spacing=tuple(s for i, s in enumerate(record.spacing) if i != axis),
        affine=None,
        orientation=None,
        modality=record.modality,
        format=record.format,
        path=record.path,
        meta=meta,
    )


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
