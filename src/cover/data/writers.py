"""Write an array (a mask, a prediction) on exactly the grid of an image that was read.

The output format follows the suffix of the target path. The array given is in the reader's
layout (:class:`~cover.data.record.ImageRecord`: volumes in RAS canonical voxel order); the
writer undoes that reorientation, so the file written has the *source file's* array shape and
axis order, spacing, origin and direction. A mask written for ``scan.nrrd`` therefore lines up
voxel for voxel with ``scan.nrrd`` in numpy as well as in world coordinates.

- NIfTI (``.nii``/``.nii.gz``): the source voxel order and the source affine (``qform`` and
  ``sform``). A 2D NIfTI source gives a 2D NIfTI with its own affine. Non-NIfTI volumes
  (DICOM series, NRRD, ...) are written in their own voxel order with their voxel -> RAS affine.
- NRRD (``.nrrd``/``.nhdr``)/MHA/MHD: the source voxel order; for an ITK source the exact spacing, origin and
  direction of its header, otherwise those of the record's affine converted to ITK's LPS.
- PNG/BMP: 2D only; integer arrays as uint8 (values 0..255) or uint16 (up to 65535); other
  values are refused (write ``.npy``/``.tiff`` instead).
- TIFF: any dtype through tifffile, in the source's axis order.
- NPY: the array as given (float32 unless integer), in the source's axis order.

DICOM output is not supported: a DICOM series gets a NIfTI in the series' own voxel order
(axis 0 = columns, axis 1 = rows, axis 2 = slices ordered along the slice normal) with the
series' geometry. A single-frame DICOM with patient geometry (``meta["slice_grid"]``) is the
one-slice series it belongs to: a NIfTI ``(cols, rows, 1)`` with that geometry (as SimpleITK
reads the DICOM: same origin, direction, spacing and voxel order); without geometry it gets a
2D NIfTI ``(rows, cols)`` with its pixel spacing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from cover.data.record import LPS_TO_RAS, ImageRecord, data_error, spacing_from_affine

_OUT_FORMATS = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "itk",
    ".nhdr": "itk",
    ".mha": "itk",
    ".mhd": "itk",
    ".png": "png",
    ".bmp": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
}

#: Formats whose reader records the exact ITK header in ``meta["itk_geometry"]``.
ITK_FORMATS = ("nrrd", "mha", "mhd")


def _spatial(array: np.ndarray, reference: ImageRecord, path: Path) -> np.ndarray:
    """Return ``array`` as ``(*spatial)`` or ``(*spatial, C)`` matching the reference."""
    array = np.asarray(array)
    spatial = reference.spatial_shape
    if array.shape == spatial:
        return array
    if array.ndim == len(spatial) + 1 and array.shape[1:] == spatial:
        return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    raise data_error(
        path,
        f"array of shape {array.shape} does not match the reference image {reference.path} of spatial shape {spatial}",
    )


def _fmt(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_OUT_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _OUT_FORMATS[suffix]
    raise data_error(path, f"cannot write this file type; use one of {', '.join(sorted(_OUT_FORMATS))}")


def _as_saveable(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _volume_affine(reference: ImageRecord) -> np.ndarray:
    if reference.affine is not None:
        return np.asarray(reference.affine, dtype=np.float64)
    return np.diag([*reference.spacing, 1.0]) if reference.spatial_dims == 3 else np.eye(4)


def _with(values: tuple[float, ...], axis: int, value: float) -> tuple[float, ...]:
    return (*values[:axis], value, *values[axis:])


def _unplanar(data: np.ndarray, reference: ImageRecord) -> tuple[np.ndarray, ImageRecord]:
    """A 2D view of a one-slice volume (``meta["plane_of_volume"]``) back as that volume.

    Args:
        data: ``(A, B)`` or ``(A, B, C)`` values on the 2D view.
        reference: The 2D record (from :func:`cover.data.record.as_planar`) or any other record.

    Returns:
        ``(data, record)``: for a planar view, ``data`` with the dropped axis restored and the
        volume's geometry; otherwise both unchanged.
    """
    plane = reference.meta.get("plane_of_volume")
    if plane is None or reference.spatial_dims != 2:
        return data, reference
    axis = int(plane["axis"])
    shape = tuple(int(s) for s in plane["shape"])
    affine = None if plane.get("affine") is None else np.asarray(plane["affine"], dtype=np.float64)
    volume = replace(
        reference,
        array=np.broadcast_to(np.float32(0), (1, *shape)),  # shape only; no copy
        affine=affine,
        spacing=spacing_from_affine(affine) if affine is not None else _with(reference.spacing, axis, 1.0),
    )
    return np.expand_dims(data, axis), volume


def _on_slice_grid(data: np.ndarray, reference: ImageRecord) -> tuple[np.ndarray, ImageRecord]:
    """A single-frame DICOM's ``(rows, cols[, C])`` values on its one-slice series grid ``(cols, rows, 1[, C])``.

    Args:
        data: Values in the record's 2D layout.
        reference: The record; unchanged unless it is 2D with ``meta["slice_grid"]``.

    Returns:
        ``(data, record)``: a volume record carrying the slice's voxel -> RAS affine, or both unchanged.
    """
    grid = reference.meta.get("slice_grid")
    if grid is None or reference.spatial_dims != 2:
        return data, reference
    affine = np.asarray(grid["affine"], dtype=np.float64)
    volume = replace(
        reference,
        array=np.broadcast_to(np.float32(0), (1, *grid["shape"])),  # shape only; no copy
        affine=affine,
        spacing=spacing_from_affine(affine),
        meta={k: v for k, v in reference.meta.items() if k != "slice_grid"},
    )
    return np.expand_dims(np.swapaxes(data, 0, 1), 2), volume


def to_source_grid(data: np.ndarray, reference: ImageRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """Undo the reader's reorientation: values in the source file's voxel order.

    Args:
        data: ``(*spatial)`` or ``(*spatial, C)`` in the record's array order (RAS canonical
            for volumes).
        reference: The record ``data`` belongs to.

    Returns:
        ``(values, affine)``: ``values`` in the source's voxel order (and shape, e.g. 2D for a
        2D NIfTI), ``affine`` the source's ``(4, 4)`` voxel -> RAS matrix, ``None`` for plain 2D
        images without one.
    """
    original = reference.meta.get("original_affine")
    if original is None:
        return data, None if reference.affine is None and reference.spatial_dims == 2 else _volume_affine(reference)
    original = np.asarray(original, dtype=np.float64)
    if reference.spatial_dims == 3:
        # The reader applied ``apply_orientation(source, io_orientation(original))``: source axis i
        # became axis ornt[i, 0], flipped when ornt[i, 1] == -1. Invert that mapping exactly.
        ornt = orientations.io_orientation(original)
        inverse = np.zeros_like(ornt)
        for axis, (target, flip) in enumerate(ornt):
            inverse[int(target)] = (axis, flip)
        data = orientations.apply_orientation(data, inverse)
    shape = reference.meta.get("original_shape")
    if shape is not None:
        dims = len(shape) if len(shape) <= 3 else 3
        spatial = tuple(int(s) for s in shape[:dims])
        if int(np.prod(spatial)) == int(np.prod(data.shape[: reference.spatial_dims])):
            data = data.reshape(spatial + data.shape[reference.spatial_dims :])
    return np.ascontiguousarray(data), original


def field_to_source_grid(field: np.ndarray, reference: ImageRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """A displacement field in the record's axes -> the source file's voxel order and axes.

    Component ``k`` of the result is the displacement along the source file's array axis ``k``
    (in voxels): the reorientation permutes the components with the axes and negates those of
    flipped axes.

    Args:
        field: ``(ndim, *spatial)`` displacements along the record's array axes, in voxels.
        reference: The record the field lives on.

    Returns:
        ``(field, affine)``: ``(ndim, *source_spatial)`` and the source's voxel -> RAS affine
        (``None`` for plain 2D images).
    """
    original = reference.meta.get("original_affine")
    if original is not None and reference.spatial_dims == 3 and field.shape[0] == 3:
        ornt = orientations.io_orientation(np.asarray(original, dtype=np.float64))
        field = np.stack([flip * field[int(axis)] for axis, flip in ornt])
    values, affine = to_source_grid(np.moveaxis(field, 0, -1), reference)
    return np.ascontiguousarray(np.moveaxis(values, -1, 0)), affine


def write_like(array: np.ndarray, reference: ImageRecord, path: str | Path) -> Path:
    """Write ``array`` on the source grid of ``reference``; format from ``path``'s suffix.

    Args:
        array: ``(*spatial)`` or ``(C, *spatial)`` values on the reference's voxel grid
            (the ``array`` layout of the record, i.e. RAS canonical for volumes).
        reference: The record the array belongs to (from :func:`read_image`).
        path: Output file; parent folders are created.

    Returns:
        The written path.

    Raises:
        DataError: Shape mismatch, unsupported suffix, a volume written as PNG, or values a
            PNG cannot hold.
    """
    out = Path(path)
    fmt = _fmt(out)
    data = _as_saveable(_spatial(array, reference, out))
    data, reference = _unplanar(data, reference)
    data, reference = _on_slice_grid(data, reference)
    data, affine = to_source_grid(data, reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "nifti":
        _write_nifti(data, affine, reference, out)
    elif fmt == "itk":
        _write_itk(data, affine, reference, out)
    elif fmt == "png":
        _write_png(data, reference, out)
    elif fmt == "tiff":
        try:
            import tifffile
        except ImportError:  # optional dependency: Pillow writes 2D TIFFs
            from PIL import Image

            Image.fromarray(data).save(out)
        else:
            # Without channels: grey pages (a 3-slice stack must not become one RGB image).
            grey = data.ndim == reference.spatial_dims or (reference.spatial_dims == 3 and data.ndim == 2)
            tifffile.imwrite(out, data, photometric="minisblack" if grey else None)
    else:
        np.save(out, data)
    return out


def _write_nifti(data: np.ndarray, affine: np.ndarray | None, reference: ImageRecord, out: Path) -> None:
    if affine is None:  # plain 2D image: (rows, cols) with its pixel spacing
        affine = np.diag([*reference.spacing, 1.0, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(out))


def _write_itk(data: np.ndarray, affine: np.ndarray | None, reference: ImageRecord, out: Path) -> None:
    import SimpleITK as sitk  # noqa: N813 - library's own spelling

    dims = data.ndim - int(data.ndim == reference.spatial_dims + 1)
    vector = data.ndim == dims + 1
    if dims == 3:  # source voxel order (x, y, z) -> ITK's numpy view (z, y, x)
        data = np.transpose(data, (2, 1, 0, 3) if vector else (2, 1, 0))
    image = sitk.GetImageFromArray(np.ascontiguousarray(data), isVector=vector)  # 2D: (rows, cols) = (y, x)
    header = reference.meta.get("itk_geometry") if reference.format in ITK_FORMATS else None
    if header is not None and len(header["spacing"]) == dims:
        image.SetSpacing(tuple(float(v) for v in header["spacing"]))
        image.SetOrigin(tuple(float(v) for v in header["origin"]))
        image.SetDirection(tuple(float(v) for v in header["direction"]))
    elif dims == 3:
        affine_lps = LPS_TO_RAS @ (affine if affine is not None else _volume_affine(reference))
        spacing = np.sqrt((affine_lps[:3, :3] ** 2).sum(axis=0))
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetDirection(tuple(float(v) for v in (affine_lps[:3, :3] / spacing).ravel()))
        image.SetOrigin(tuple(float(v) for v in affine_lps[:3, 3]))
    else:
        image.SetSpacing((float(reference.spacing[1]), float(reference.spacing[0])))
    sitk.WriteImage(image, str(out), useCompression=True)


def _write_png(data: np.ndarray, reference: ImageRecord, out: Path) -> None:
    from PIL import Image

    if reference.spatial_dims != 2 or data.ndim not in (2, 3):
        raise data_error(out, "PNG/BMP holds 2D images only; write a volume as .nii.gz")
    if data.ndim == 3 and data.shape[-1] not in (3, 4):
        raise data_error(out, f"PNG cannot hold {data.shape[-1]} channels")
    values = np.asarray(data)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or values.min() < 0:
        raise data_error(out, "PNG holds non-negative integers only; write .npy or .tiff")
    top = float(values.max()) if values.size else 0.0
    if top <= 255:
        values = values.astype(np.uint8)
    elif top <= 65535 and values.ndim == 2:
        values = values.astype(np.uint16)
    else:
        raise data_error(out, f"values up to {top:g} do not fit a PNG; write .npy or .tiff")
    Image.fromarray(values).save(out)
