"""Grids of ``cover register``: which voxel grid the network sees and how results map back.

* :class:`Placement`: a 2D checkpoint accepts single-slice volumes, squeezed to 2D and back.
* :func:`to_fixed_grid`: the moving image in the fixed image's voxel grid (world coordinates).
* :func:`target_spacing` / :func:`working_size`: the checkpoint's voxel spacing.
* :func:`pad_to_multiple` / :func:`crop_padding`: sizes divisible by the backbone's divisor.

Images are ``(B, C, *S)`` tensors or ``(C, *S)`` arrays in the record's array axis order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from cover.data.readers import ImageRecord
from cover.errors import DataError
from cover.geometry import identity_grid, linear_mode, sample_at

#: Formats whose headers carry a physical voxel spacing (plain images report 1.0 per axis).
GEOMETRY_FORMATS = frozenset({"nifti", "mgh", "dicom", "dicom-series", "nrrd", "mha", "mhd"})


@dataclass
class Placement:
    """How an image record maps onto the network's spatial dimensions.

    Attributes:
        squeeze_axis: Array axis of size 1 removed to give a 2D image, or ``None``.
    """

    squeeze_axis: int | None = None

    def to_network(self, array: np.ndarray) -> np.ndarray:
        """``(C, *record_spatial)`` -> ``(C, *network_spatial)``."""
        return array if self.squeeze_axis is None else np.take(array, 0, axis=self.squeeze_axis + 1)

    def to_record(self, array: np.ndarray) -> np.ndarray:
        """``(C, *network_spatial)`` -> ``(C, *record_spatial)``."""
        return array if self.squeeze_axis is None else np.expand_dims(array, self.squeeze_axis + 1)

    def spacing(self, record: ImageRecord) -> tuple[float, ...]:
        """The record's spacing on the network's axes."""
        spacing = list(record.spacing)
        if self.squeeze_axis is not None:
            spacing.pop(self.squeeze_axis)
        return tuple(float(s) for s in spacing)


def placement_for(record: ImageRecord, spatial_dims: int) -> Placement:
    """Check that an image suits a checkpoint of ``spatial_dims`` and say how to map it.

    Args:
        record: A read image.
        spatial_dims: 2 or 3 (the checkpoint's).

    Returns:
        The placement (2D checkpoints accept volumes with one axis of size 1).
    """
    if record.spatial_dims == spatial_dims:
        return Placement()
    if spatial_dims == 2 and record.spatial_dims == 3:
        singleton = [axis for axis, size in enumerate(record.spatial_shape) if size == 1]
        if singleton:
            return Placement(squeeze_axis=singleton[-1])
    raise DataError(
        f"{record.path}: a {record.spatial_dims}D image of size {record.spatial_shape} cannot be registered "
        f"with a {spatial_dims}D checkpoint"
    )


def same_grid(fixed: ImageRecord, moving: ImageRecord) -> bool:
    """Whether two records share one voxel grid (same size and, where both have one, affine)."""
    if fixed.spatial_shape != moving.spatial_shape:
        return False
    if fixed.affine is None or moving.affine is None:
        return True
    return bool(np.allclose(fixed.affine, moving.affine, atol=1e-4))


def to_fixed_grid(array: np.ndarray, moving: ImageRecord, fixed: ImageRecord, mode: str = "linear") -> np.ndarray:
    """Resample values on the moving image's grid onto the fixed image's voxel grid.

    Volumes with geometry are matched through world coordinates
    (``moving_voxel = A_moving^-1 A_fixed fixed_voxel``); equal grids are returned unchanged.

    Args:
        array: ``(C, *moving_spatial)`` values (image or labels).
        moving: The moving record (its grid).
        fixed: The fixed record (target grid).
        mode: ``"linear"`` or ``"nearest"``.

    Returns:
        ``(C, *fixed_spatial)`` float32 (zeros outside the moving image).
    """
    if same_grid(fixed, moving):
        return array
    if fixed.affine is None or moving.affine is None or fixed.spatial_dims != 3 or moving.spatial_dims != 3:
        raise DataError(
            f"{moving.path}: size {moving.spatial_shape} differs from the fixed image's {fixed.spatial_shape} and "
            "the images carry no geometry to match them; resample the moving image to the fixed grid first"
        )
    matrix = np.linalg.inv(np.asarray(moving.affine, dtype=np.float64)) @ np.asarray(fixed.affine, dtype=np.float64)
    grid = identity_grid(fixed.spatial_shape, dtype=torch.float64)[0].reshape(3, -1)
    coords = torch.from_numpy(matrix[:3, :3]) @ grid + torch.from_numpy(matrix[:3, 3:])
    coords = coords.reshape(1, 3, *fixed.spatial_shape).float()
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return sample_at(values, coords, mode=mode)[0].numpy()


def target_spacing(metadata: dict[str, Any], spatial_dims: int) -> tuple[float, ...] | None:
    """Voxel spacing the checkpoint was trained at, on the network's axes, or ``None``."""
    spacing = (metadata.get("data") or {}).get("spacing")
    if not spacing:
        return None
    spacing = [float(s) for s in spacing]
    if len(spacing) == spatial_dims + 1 and spatial_dims == 2:  # 2D slices of volumes
        spacing.pop(int(metadata.get("slice_axis", 2)))
    if len(spacing) != spatial_dims:
        return None
    return tuple(spacing)


def working_size(
    size: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...] | None, physical: bool
) -> tuple[int, ...]:
    """Grid size at the checkpoint's spacing (unchanged without a physical spacing or target).

    Args:
        size: Fixed image size on the network's axes.
        spacing: Its voxel spacing.
        target: Checkpoint spacing or ``None``.
        physical: Whether ``spacing`` is a real physical spacing.

    Returns:
        The working grid size.
    """
    if target is None or not physical:
        return size
    if all(abs(s - t) <= 1e-3 * t for s, t in zip(spacing, target, strict=True)):
        return size
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, target, strict=True))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Zero-pad the spatial axes of ``(B, C, *S)`` to multiples of ``divisor`` (split evenly).

    Returns:
        The padded tensor and ``(before, after)`` per spatial axis.
    """
    pads = []
    for size in x.shape[2:]:
        extra = (-size) % divisor
        pads.append((extra // 2, extra - extra // 2))
    flat = [value for before_after in reversed(pads) for value in before_after]
    return F.pad(x, flat), pads


def crop_padding(x: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on ``(B, C, *S_padded)``."""
    index = [slice(None), slice(None)] + [slice(b, x.shape[2 + i] - a) for i, (b, a) in enumerate(pads)]
    return x[tuple(index)]


def resize_linear(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize ``(B, C, *S)`` to ``size`` ((bi/tri)linear, ``align_corners=False``, as the demo slices)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode=linear_mode(len(size)), align_corners=False)
