"""Reading label maps: integer class indices on exactly their image's grid.

A label map is accepted only when it is what it claims to be; every refusal is a one-line
:class:`cover.errors.DataError` naming the label file and its image:

- one value per pixel: palette (P-mode) PNG/BMP files give their palette *indices* (the colours
  they stand for are ignored); a file with several samples (RGB, vector components) is
  accepted only when the samples are equal, else refused as a colour label;
- a lossless file: a JPEG is refused (its compression changes values near every edge, so
  class indices come back as neighbouring or in-between classes); save label maps as PNG;
- integer values: no value may differ from an integer by more than :data:`INTEGER_TOLERANCE`
  (a probability map or an image given as a label is refused), none may be negative, and
  the map must not look like an image: at most :data:`MAX_LABEL_VALUES` distinct values, and
  not many values changing at most pixels (a grey picture, a CT volume, noise);
- the image's geometry: the same array shape, and, when both files carry physical geometry
  (NIfTI, NRRD, MHA/MHD, MGH, DICOM), the same voxel size, origin and axis directions within
  :data:`GEOMETRY_TOLERANCE` of a voxel. Both are compared after the readers' RAS canonical
  reorientation, so a label stored in another voxel order over the same grid is accepted.
  Plain images (PNG, JPEG, BMP, TIFF, NumPy) carry no geometry; only their shapes are compared.

Values must be the class indices ``0..K-1`` (nnU-Net's rule): a binary mask saved as 0/255
is not 256 classes. Other values are refused (:func:`count_classes`, over all label maps of a
run) unless the user maps them explicitly with ``label_values`` (``--label-values 0,255``:
value ``i`` of the list is class ``i``); the mapping is applied as each map is read
(:func:`read_label_map`) and undone on written masks (:func:`original_values`).

A 2D image taken from a volume of one slice (:func:`cover.data.record.as_planar`) takes its
label from the same slice: the label's 3D geometry is checked against the volume, then the
same axis is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cover.data.readers import read_image
from cover.data.record import PLAIN_FORMATS, ImageRecord, data_error
from cover.errors import ConfigError

#: Largest distance of a label value from an integer still read as that integer.
INTEGER_TOLERANCE = 1e-3

#: Most distinct values a label map may hold: 255 classes and the background. More is an image
#: (a grey picture uses up to 256 values, a CT volume thousands), not class indices.
MAX_LABEL_VALUES = 256

#: With more distinct values than this, a label map whose neighbouring pixels differ more often
#: than :data:`NOISY_FRACTION` of the time is a picture or noise: class regions are piecewise
#: constant (a label map with half its pixels on a boundary is no segmentation).
NOISY_MIN_VALUES = 16
NOISY_FRACTION = 0.5

#: Largest difference of voxel size, origin and direction vectors between an image and its
#: label map, as a fraction of the image's smallest voxel size.
GEOMETRY_TOLERANCE = 0.01


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def grid_problem(
    record: ImageRecord, affine: np.ndarray | None, shape: Sequence[int], other: str = "its image"
) -> str | None:
    """What differs between ``record``'s grid and a reference grid, or ``None`` when they agree.

    Args:
        record: The file checked (a label map, or a further channel file of a case).
        affine: The reference's ``(4, 4)`` voxel -> RAS matrix, or ``None`` (a plain image: only
            the shapes are compared).
        shape: The reference's spatial shape.
        other: How the message names the reference (``"its image"``, ``"channel 0 (a.nii.gz)"``).

    Returns:
        A short phrase such as ``"has shape 4x5 but its image is 4x6"``, or ``None``.
    """
    if record.spatial_shape != tuple(shape):
        return f"has shape {_size(record.spatial_shape)} but {other} is {_size(shape)}"
    if affine is None or record.affine is None or record.format in PLAIN_FORMATS:
        return None
    image_spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    tolerance = GEOMETRY_TOLERANCE * float(image_spacing.min())
    label_spacing = np.sqrt((record.affine[:3, :3] ** 2).sum(axis=0))
    if np.abs(label_spacing - image_spacing).max() > tolerance:
        return (
            f"has voxel size {np.round(label_spacing, 4).tolist()} mm but {other} has "
            f"{np.round(image_spacing, 4).tolist()} mm"
        )
    if np.abs(record.affine[:3, :3] - affine[:3, :3]).max() > tolerance:
        return f"has other axis directions than {other} (same shape, rotated grid)"
    offset = float(np.linalg.norm(record.affine[:3, 3] - affine[:3, 3]))
    if offset > tolerance:
        return f"has its origin {offset:.3g} mm away from {other}'s (same shape, shifted grid)"
    return None


def _image_like(labels: np.ndarray) -> str | None:
    """Why integer ``labels`` (``(*spatial)``) look like an image rather than class indices, or ``None``.

    More than :data:`MAX_LABEL_VALUES` distinct values, or more than :data:`NOISY_MIN_VALUES`
    of them with neighbouring pixels differing more often than :data:`NOISY_FRACTION` of the
    time (class regions are piecewise constant; a picture or noise changes at most pixels).
    """
    top = int(labels.max())
    if top < NOISY_MIN_VALUES:  # few values: any map of them is plausible
        return None
    # A count per value is linear in the pixels (np.unique sorts them); values are >= 0 here.
    count = int(np.count_nonzero(np.bincount(labels.ravel()))) if top < 2**24 else int(np.unique(labels).size)
    if count > MAX_LABEL_VALUES:
        return f"holds {count} distinct values (up to {top}), more than {MAX_LABEL_VALUES}"
    if count <= NOISY_MIN_VALUES:
        return None
    pairs = changed = 0
    for axis in range(labels.ndim):
        if labels.shape[axis] > 1:
            steps = np.diff(labels, axis=axis) != 0
            pairs, changed = pairs + steps.size, changed + int(np.count_nonzero(steps))
    if pairs and changed > NOISY_FRACTION * pairs:
        return (
            f"holds {count} distinct values and {100 * changed / pairs:.0f}% of neighbouring pixels differ "
            "(class regions are piecewise constant)"
        )
    return None


def read_label_map(
    path: str | Path, image: ImageRecord | Sequence[int] | None, values: Sequence[int] | None = None
) -> np.ndarray:
    """Read a label map and check it against its image.

    Args:
        path: Label file (or DICOM series folder).
        image: The image's record (shape and geometry are checked), only its spatial
            shape, or ``None`` (values checked only, e.g. for counting classes).
        values: ``label_values``: the file's value ``values[i]`` becomes class ``i``; ``None``
            keeps the values (which :func:`count_classes` checks are ``0..K-1``).

    Returns:
        int64 ``(*spatial)`` class indices on the image's grid.

    Raises:
        DataError: Unreadable file, colour / several components, non-integer or negative
            values, a value missing from ``values``, or a shape or geometry that differs from
            the image's; the message names both files.
    """
    record = read_image(path, channels=True, label=True)
    if record.format == "jpeg":
        of = f" (label map of {image.path})" if isinstance(image, ImageRecord) else ""
        raise data_error(
            record.path,
            f"is a JPEG{of}; JPEG compression is lossy and changes class indices near every edge: "
            "label maps must be lossless, save it as PNG (or NIfTI/NRRD)",
        )
    owner = _place_on_image(record, image)
    labels = _class_indices(record, owner)
    if values is not None:
        return _mapped(labels, values, record.path, owner)
    problem = _image_like(labels)
    if problem is not None:
        raise data_error(record.path, f"{problem}{owner}; a label map holds class indices (is this an image?)")
    return labels


def _place_on_image(record: ImageRecord, image: ImageRecord | Sequence[int] | None) -> str:
    """Check that a label map lies on its image's grid (a slice of a volume is squeezed in ``record``).

    Args:
        record: The label map as read (``(C, *spatial)``); a one-slice volume labelling a plane
            of a volume becomes that plane.
        image: The image's record, only its spatial shape, or ``None`` (nothing to check).

    Returns:
        ``" (label map of IMAGE)"`` for messages when the image's record is known, else ``""``.

    Raises:
        DataError: Shape or geometry differ from the image's.
    """
    if isinstance(image, ImageRecord):
        owner = f" (label map of {image.path})"
        plane = image.meta.get("plane_of_volume")
        on_volume = plane is not None and record.spatial_dims == 3
        affine, shape = (plane["affine"], plane["shape"]) if on_volume else (image.affine, image.spatial_shape)
        if affine is not None and image.format not in PLAIN_FORMATS:
            affine = np.asarray(affine, dtype=np.float64)
        else:
            affine = None
        problem = grid_problem(record, affine, shape)
        if problem is not None:
            raise data_error(record.path, f"{problem}{owner}; a label map must lie on its image's grid")
        if on_volume:
            record.array = np.take(record.array, 0, axis=int(plane["axis"]) + 1)
        return owner
    if image is not None and record.spatial_shape != tuple(image):
        raise data_error(
            record.path,
            f"label map of shape {record.spatial_shape} does not match its image's shape {tuple(image)}",
        )
    return ""


def _class_indices(record: ImageRecord, owner: str) -> np.ndarray:
    """A label map's values as int64 class indices: one sample per pixel, integers, none negative.

    Args:
        record: The label map placed on its image's grid.
        owner: ``" (label map of IMAGE)"`` or ``""``, for messages.

    Returns:
        ``(*spatial)`` int64 values as the file holds them.

    Raises:
        DataError: Colour (several different samples), non-integer or negative values.
    """
    samples = record.array[0]
    if record.channels > 1 and np.abs(record.array - samples).max() > 0:
        raise data_error(
            record.path,
            f"is a colour label map ({record.channels} samples per pixel with different values){owner}; a label "
            "map holds one class index per pixel: save it as a grey or palette (P-mode) image of class indices",
        )
    fraction = np.abs(samples - np.rint(samples))
    bad = int(np.count_nonzero(fraction > INTEGER_TOLERANCE))
    if bad:
        example = float(samples.reshape(-1)[int(np.argmax(fraction.reshape(-1) > INTEGER_TOLERANCE))])
        raise data_error(
            record.path,
            f"holds {bad} non-integer value(s) (e.g. {example:.4g}){owner}; a label map holds integer class "
            "indices (is this a probability map or an image?)",
        )
    labels = np.rint(samples).astype(np.int64)
    if labels.min() < 0:
        found = _value_list(np.unique(labels))
        raise data_error(
            record.path,
            f"label map has negative values ({found}){owner}; class indices are 0, 1, ..., K-1: "
            "rewrite the file with non-negative values (then --label-values can map them)",
        )
    return labels


def _value_list(found: np.ndarray, most: int = 8) -> str:
    """``"values 0, 255"``, with at most ``most`` values shown."""
    shown = ", ".join(str(int(v)) for v in found[:most])
    more = f", ... ({len(found)} in all)" if len(found) > most else ""
    return f"value{'s' if len(found) > 1 else ''} {shown}{more}"


def _mapped(labels: np.ndarray, values: Sequence[int], path: Path, owner: str) -> np.ndarray:
    """``labels`` with ``values[i]`` replaced by ``i``; a value not in ``values`` is refused."""
    order = np.argsort(np.asarray(values, dtype=np.int64))
    ordered = np.asarray(values, dtype=np.int64)[order]
    found = np.unique(labels)
    unknown = found[~np.isin(found, ordered)]
    if unknown.size:
        raise data_error(
            path,
            f"holds {_value_list(unknown)}{owner}, which label_values {list(values)} does not list; "
            "give every value of the label maps in --label-values (value i of the list becomes class i)",
        )
    return order[np.searchsorted(ordered, labels)]


def check_label_values(values: Sequence[int] | None) -> tuple[int, ...] | None:
    """Validate ``label_values``: at least two distinct non-negative integers, or ``None``.

    Raises:
        ConfigError: Fewer than two values, a repeated or a negative value.
    """
    if values is None:
        return None
    values = tuple(int(v) for v in values)
    problem = (
        "needs at least two values (background first), e.g. --label-values 0,255"
        if len(values) < 2
        else "holds a negative value; label maps hold non-negative values"
        if min(values) < 0
        else "repeats a value; each value is one class"
        if len(set(values)) < len(values)
        else None
    )
    if problem is not None:
        raise ConfigError(f"label_values: {list(values)} {problem}")
    return values


def original_values(mask: np.ndarray, num_classes: int, values: Sequence[int] | None) -> np.ndarray:
    """A predicted mask of class indices in the label maps' own values (``values[k]`` for class ``k``).

    Args:
        mask: Integer ``(*spatial)`` class indices ``0..K-1``.
        num_classes: ``K``.
        values: ``label_values`` of the run (``None``: the indices are the values).

    Returns:
        ``(*spatial)`` array in the smallest unsigned type that holds every value of the run
        (not only those predicted: every mask of a run has one type).
    """
    table = np.arange(num_classes) if values is None else np.asarray(values, dtype=np.int64)
    top = int(table.max())
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return table.astype(dtype)[np.asarray(mask, dtype=np.int64)]


def count_classes(found: Sequence[tuple[Path | str, np.ndarray]], declared: int | None, key: str) -> int:
    """The number of classes ``K`` of a run's label maps, checking their values are class indices.

    Args:
        found: ``(label file, its distinct values)`` for every label map of the run.
        declared: ``K`` given by the user (``num_classes``, the number of ``class_names`` or of
            ``label_values``), or ``None`` to infer it.
        key: How the message names where ``declared`` came from (``"num_classes is 4"``).

    Returns:
        ``declared``, or the largest value plus one when the values are exactly ``0..K-1``.

    Raises:
        DataError: A value ``>= declared``, or (undeclared) values that are not ``0..K-1``
            (``{0, 255}``: a binary mask); the message names a file, its values and the
            ``--label-values`` that maps them.
    """
    union = np.unique(np.concatenate([np.asarray(v, dtype=np.int64).ravel() for _, v in found]))
    top = int(union.max())
    if declared is not None and top < declared:
        return declared
    if declared is None and union.size == top + 1:
        return max(2, top + 1)
    limit = declared if declared is not None else int(np.flatnonzero(union != np.arange(union.size))[0])
    path, values = next((p, np.unique(v)) for p, v in found if int(np.max(v)) >= limit)
    rule = f"but {key}" if declared is not None else f"but the label maps hold {_value_list(union)} together"
    advice = f" (0..{declared - 1} here)" if declared is not None else ""
    if union.size >= 2 and union.size == (declared or union.size):  # a mapping of these values would do
        listed = ",".join(str(int(v)) for v in union)
        advice = f": pass --label-values {listed} (label_values in a YAML file) to make value i of the list class i"
    raise data_error(path, f"holds {_value_list(values)} {rule}; label values must be the class indices 0..K-1{advice}")
