"""Write an array (a mask, a prediction) in the geometry of an image that was read.

The output format follows the suffix of the target path; the geometry (affine, spacing) comes
from the reference :class:`~cover.data.record.ImageRecord`:

- NIfTI (``.nii``/``.nii.gz``): the array is in the reference's RAS canonical voxel order;
  when the reference came from a file in another voxel order (``meta["original_affine"]``),
  the canonical reorientation is undone so the output lines up voxel for voxel with the
  original file. Otherwise the RAS affine held by the record is written. World coordinates
  match in both cases.
- NRRD/MHA/MHD: SimpleITK image with the record's spacing, origin and direction (converted to
  ITK's LPS convention). 2D references get spacing only.
- PNG/BMP: integer arrays as uint8 (values 0..255) or uint16 (up to 65535); other values are
  refused (write ``.npy``/``.tiff`` instead).
- TIFF: any dtype through tifffile.
- NPY: the array as given (float32 unless integer).

DICOM output is not supported: write ``.nii.gz`` next to a DICOM series instead.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from cover.data.record import LPS_TO_RAS, ImageRecord, data_error

_OUT_FORMATS = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "itk",
    ".mha": "itk",
    ".mhd": "itk",
    ".png": "png",
    ".bmp": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
}


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


def write_like(array: np.ndarray, reference: ImageRecord, path: str | Path) -> Path:
    """Write ``array`` with the geometry of ``reference``; format from ``path``'s suffix.

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
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "nifti":
        _write_nifti(data, reference, out)
    elif fmt == "itk":
        _write_itk(data, reference, out)
    elif fmt == "png":
        _write_png(data, reference, out)
    elif fmt == "tiff":
        try:
            import tifffile
        except ImportError:  # optional dependency: Pillow writes 2D TIFFs
            from PIL import Image

            Image.fromarray(data).save(out)
        else:
            tifffile.imwrite(out, data)
    else:
        np.save(out, data)
    return out


def _volume_affine(reference: ImageRecord) -> np.ndarray:
    if reference.affine is not None:
        return np.asarray(reference.affine, dtype=np.float64)
    return np.diag([*reference.spacing, 1.0]) if reference.spatial_dims == 3 else np.eye(4)


def _write_nifti(data: np.ndarray, reference: ImageRecord, out: Path) -> None:
    if reference.spatial_dims == 2:
        data = data[:, :, None] if data.ndim == 2 else data[:, :, None, :]
        affine = np.diag([*reference.spacing, 1.0, 1.0])
    else:
        affine = _volume_affine(reference)
    image = nib.Nifti1Image(data, affine)
    original = reference.meta.get("original_affine")
    if original is not None and reference.spatial_dims == 3:
        # Undo the RAS canonical reorientation: back to the source file's voxel order.
        target = orientations.io_orientation(np.asarray(original))
        current = orientations.io_orientation(affine)
        transform = orientations.ornt_transform(current, target)
        image = image.as_reoriented(transform)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(out))


def _write_itk(data: np.ndarray, reference: ImageRecord, out: Path) -> None:
    import SimpleITK as sitk  # noqa: N813 - library's own spelling

    vector = data.ndim == reference.spatial_dims + 1
    if reference.spatial_dims == 2:
        image = sitk.GetImageFromArray(data, isVector=vector)  # (H, W) -> size (W, H)
        image.SetSpacing((float(reference.spacing[1]), float(reference.spacing[0])))
    else:
        axes = (2, 1, 0, 3) if vector else (2, 1, 0)
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, axes)), isVector=vector)
        affine_lps = LPS_TO_RAS @ _volume_affine(reference)
        spacing = np.sqrt((affine_lps[:3, :3] ** 2).sum(axis=0))
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetDirection(tuple(float(v) for v in (affine_lps[:3, :3] / spacing).ravel()))
        image.SetOrigin(tuple(float(v) for v in affine_lps[:3, 3]))
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
