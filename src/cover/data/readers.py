"""Read any supported medical or plain image into an :class:`ImageRecord`.

Formats and libraries:

===============  ===========================  ==============================================
format           suffixes                     library / notes
===============  ===========================  ==============================================
``nifti``        .nii, .nii.gz                nibabel; reoriented to RAS canonical
``mgh``          .mgz, .mgh                   nibabel (FreeSurfer); same as NIfTI
``dicom``        .dcm, .dicom, or 'DICM'      pydicom; modality LUT (CT in HU), MONOCHROME1
                 magic at byte 128            inverted; multi-frame -> volume
``dicom-series`` a folder of slices           pydicom; ordered along the slice normal
``nrrd``         .nrrd, .nhdr                 SimpleITK; LPS -> RAS canonical
``mha``/``mhd``  .mha, .mhd                   SimpleITK; LPS -> RAS canonical
``png``/``jpeg`` .png, .jpg, .jpeg, .bmp      Pillow; 8/16 bit; palette labels keep indices
``tiff``         .tif, .tiff                  tifffile (Pillow fallback); stacks -> volume
``npy``/``npz``  .npy, .npz                   numpy; no geometry (spacing 1)
===============  ===========================  ==============================================

Colour samples and vector components are never mixed into grey: without ``channels`` an image
whose samples differ is refused (:func:`cover.data.record.single_channel`).

Every failure is a one-line :class:`cover.errors.DataError` naming the file. Plain images
(PNG/JPEG/TIFF/NPY) carry no physical spacing; their spacing is reported as 1.0 per axis.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from cover.data.dicom import is_dicom_file, read_dicom_file, read_dicom_series
from cover.data.record import (
    LPS_TO_RAS,
    MAX_VOXELS,
    ImageRecord,
    check_finite,
    check_voxel_count,
    data_error,
    single_channel,
    volume_record,
)
from cover.data.writers import write_like
from cover.errors import DataError

__all__ = [
    "MAX_VOXELS",
    "SUFFIX_FORMATS",
    "ImageRecord",
    "detect_format",
    "read_image",
    "write_like",
]

#: Lower-case file-name endings and the format they select (longest match wins).
SUFFIX_FORMATS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".mgz": "mgh",
    ".mgh": "mgh",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mhd",
    ".npy": "npy",
    ".npz": "npz",
}


def detect_format(path: str | Path) -> str | None:
    """Format name of ``path`` from its suffix, a DICOM magic number, or a folder.

    Args:
        path: File or folder.

    Returns:
        A format name (see module docstring) or ``None`` if not an image this reader knows.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom-series"
    name = p.name.lower()
    for suffix in sorted(SUFFIX_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIX_FORMATS[suffix]
    if p.is_file() and is_dicom_file(p):
        return "dicom"
    return None


def read_image(path: str | Path, *, channels: bool = False, label: bool = False) -> ImageRecord:
    """Read an image file or a DICOM series folder.

    Args:
        path: Image file, or a folder holding one DICOM series.
        channels: Keep colour samples / the 4th NIfTI axis / vector components as channels.
            When False every image comes back with ``C = 1``; samples are never mixed into
            grey: an image whose samples differ (colour, vector components) is refused, one
            whose samples are equal (a grey picture saved as RGB) gives that grey value.
        label: Read a label map: a palette (P-mode) PNG/BMP gives its palette indices, not
            the colours they stand for.

    Returns:
        The :class:`ImageRecord`; ``array`` is float32 ``(C, *spatial)``.

    Raises:
        DataError: Missing, empty, truncated, corrupt, non-image or unsupported input, a header
            claiming an absurd size, NaN/inf values, or a 4D volume when ``channels`` is False.
    """
    p = Path(path)
    if not p.exists():
        raise data_error(p, "no such file or folder")
    if p.is_dir():
        return read_dicom_series(p, channels=channels)
    if p.stat().st_size == 0:
        raise data_error(p, "file is empty (0 bytes)")
    fmt = detect_format(p)
    if fmt is None:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise data_error(p, f"unsupported file type; expected one of {known} or a DICOM file")
    reader = _READERS[fmt]
    try:
        if label and reader is _read_pillow:
            return _read_pillow(p, fmt, channels, indices=True)
        return reader(p, fmt, channels)
    except DataError:
        raise
    except MemoryError as exc:
        raise data_error(p, f"not enough memory to read this {fmt} file") from exc
    except Exception as exc:  # library errors on corrupt files come in many types
        raise data_error(p, f"cannot read {fmt} file ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    """One short line describing a library exception (ITK messages are multi-line)."""
    text = str(exc).strip()
    if "ERROR:" in text:
        text = text.rsplit("ERROR:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    line = line[:200]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _plain_record(
    values: np.ndarray,
    *,
    samples: bool,
    channels: bool,
    path: Path,
    fmt: str,
    alpha: bool = True,
    kind: str = "a colour image",
    **meta: Any,
) -> ImageRecord:
    """Record for a plain image ``(H, W)`` or ``(H, W, S)`` (``samples`` = has colour axis).

    Without ``channels`` the samples must hold one grey value (:func:`single_channel`).
    """
    if samples:
        values = values if channels else single_channel(path, values, alpha=alpha, kind=kind)
    if values.ndim == 2:
        values = values[..., None]
    array = np.ascontiguousarray(np.moveaxis(values, -1, 0), dtype=np.float32)
    check_finite(path, array)
    return ImageRecord(
        array=array,
        spacing=(1.0,) * (array.ndim - 1),
        affine=None,
        orientation=None,
        modality=None,
        format=fmt,
        path=path,
        meta=dict(meta),
    )


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, fmt: str, channels: bool) -> ImageRecord:
    try:
        img = nib.load(str(path))
    except Exception as exc:
        kind = "NIfTI" if fmt == "nifti" else "MGH"
        raise data_error(path, f"not a valid {kind} file ({_short(exc)})") from exc
    shape = tuple(int(s) for s in img.shape)
    check_voxel_count(path, shape)
    if path.name.lower().endswith(".nii"):
        offset = int(img.header.get_data_offset())
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        expected = offset + int(np.prod(shape)) * itemsize
        size = path.stat().st_size
        if size < expected:
            raise data_error(path, f"file is truncated: {size} bytes where the header needs {expected}")
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) > 4 or (len(shape) == 4 and shape[3] > 1 and not channels):
        size = "x".join(str(s) for s in img.shape)
        raise data_error(
            path,
            f"is a {len(img.shape)}D image ({size}) but a 3D volume is expected; if its last axis holds "
            f"{shape[3]} channels pass --in-channels {shape[3]}, else split it into 3D files",
        )
    file_shape = [int(s) for s in img.shape]
    if len(img.shape) == 2:  # a true 2D NIfTI: a volume of one slice along its third axis
        img = type(img)(np.asanyarray(img.dataobj)[..., None], img.affine, img.header)
    original = img.affine
    canonical = nib.as_closest_canonical(img)
    try:
        data = canonical.get_fdata(dtype=np.float32)
    except Exception as exc:
        raise data_error(path, f"truncated or corrupt NIfTI data ({_short(exc)})") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return volume_record(
        data,
        canonical.affine,
        path=path,
        fmt=fmt,
        modality=None,
        meta={
            "original_affine": original.tolist(),
            "original_orientation": "".join(nib.aff2axcodes(original)),
            "original_shape": file_shape,
        },
    )


# ------------------------------------------------------------------- SimpleITK (NRRD, MHA)


def _read_itk(path: Path, fmt: str, channels: bool) -> ImageRecord:
    import SimpleITK as sitk  # noqa: N813 - library's own spelling

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise data_error(path, f"not a valid {fmt.upper()} file ({_short(exc)})") from exc
    size = tuple(int(s) for s in reader.GetSize())
    comps = int(reader.GetNumberOfComponents())
    check_voxel_count(path, (*size, comps))
    dim = int(reader.GetDimension())
    if dim not in (2, 3):
        raise data_error(path, f"is a {dim}D image; only 2D and 3D images are supported")
    modality = None
    if reader.HasMetaDataKey("Modality"):
        modality = reader.GetMetaData("Modality").replace("MET_MOD_", "").strip() or None
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise data_error(path, f"truncated or corrupt {fmt.upper()} data ({_short(exc)})") from exc
    arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)  # (z, y, x[, c])
    header = {  # exact header, so masks are written back on this very grid
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }
    kind = "a vector image"
    if dim == 2:
        record = _plain_record(
            arr, samples=comps > 1, channels=channels, path=path, fmt=fmt, alpha=False, kind=kind, itk_geometry=header
        )
        spacing = tuple(float(s) for s in image.GetSpacing())
        record.spacing = (spacing[1], spacing[0])
        record.modality = modality
        return record
    spatial = np.transpose(arr, (2, 1, 0) + ((3,) if arr.ndim == 4 else ()))  # (x, y, z[, c])
    if comps > 1 and not channels:
        spatial = single_channel(path, spatial, alpha=False, kind=kind)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    return volume_record(
        spatial, LPS_TO_RAS @ affine_lps, path=path, fmt=fmt, modality=modality, meta={"itk_geometry": header}
    )


# ----------------------------------------------------------------- Pillow (PNG, JPEG, BMP)


def _read_pillow(path: Path, fmt: str, channels: bool, *, indices: bool = False) -> ImageRecord:
    """Read a PNG/JPEG/BMP; ``indices``: a palette image gives its palette indices (label maps)."""
    try:
        with Image.open(path) as img:
            check_voxel_count(path, (img.height, img.width, len(img.getbands())))
            img.load()
            mode = img.mode
            if mode == "P" and indices:
                pass  # np.asarray gives the indices, not the palette's colours
            elif mode in ("P", "PA"):
                img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
            elif mode == "1":
                img = img.convert("L")
            elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;"):
                img = img.convert("RGB")
            values = np.asarray(img)
    except UnidentifiedImageError as exc:
        raise data_error(path, f"not a valid {fmt.upper()} image (unrecognised content)") from exc
    except Image.DecompressionBombError as exc:
        raise data_error(path, f"header claims an absurd image size ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise data_error(path, f"truncated or corrupt {fmt.upper()} image ({_short(exc)})") from exc
    return _plain_record(
        values.astype(np.float32),
        samples=values.ndim == 3,
        channels=channels,
        path=path,
        fmt=fmt,
        kind=f"a colour image (mode {mode})",
        mode=mode,
        bit_depth=int(values.dtype.itemsize * 8),
    )


# ------------------------------------------------------------------------------- TIFF


def _read_tiff(path: Path, fmt: str, channels: bool) -> ImageRecord:
    try:
        import tifffile
    except ImportError:  # optional: Pillow reads ordinary 2D TIFFs
        return _read_pillow(path, fmt, channels)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            check_voxel_count(path, tuple(series.shape))
            axes = series.axes
            values = series.asarray()
    except DataError:
        raise
    except Exception as exc:
        raise data_error(path, f"not a valid TIFF image ({_short(exc)})") from exc
    keep = [i for i, size in enumerate(values.shape) if size > 1 or axes[i] in "YX"]
    values = values.reshape([values.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "S" in axes and not axes.endswith("S"):  # planar colour: samples first
        values = np.moveaxis(values, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    samples = axes.endswith("S")
    spatial_axes = len(axes) - int(samples)
    if spatial_axes == 2:
        return _plain_record(values.astype(np.float32), samples=samples, channels=channels, path=path, fmt=fmt)
    if spatial_axes != 3:
        raise data_error(path, f"TIFF has axes {axes!r}; only 2D images and 3D stacks are supported")
    data = values.astype(np.float32)
    if samples and not channels:
        data = single_channel(path, data, alpha=True, kind="a colour TIFF image")
    if data.ndim == 3:
        data = data[None]
    else:
        data = np.moveaxis(data, -1, 0)
    array = np.ascontiguousarray(data)
    check_finite(path, array)
    return ImageRecord(
        array=array,
        spacing=(1.0, 1.0, 1.0),
        affine=np.eye(4),
        orientation=None,
        modality=None,
        format=fmt,
        path=path,
        meta={"axes": axes},
    )


# ------------------------------------------------------------------------------ NumPy


def _npy_shape(handle: Any) -> tuple[int, ...]:
    """Shape from an .npy header without reading the data."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, _ = np.lib.format.read_array_header_2_0(handle)
    return tuple(int(s) for s in shape)


def _read_numpy(path: Path, fmt: str, channels: bool) -> ImageRecord:
    spacing = None
    affine = None
    try:
        if fmt == "npy":
            with path.open("rb") as handle:
                check_voxel_count(path, _npy_shape(handle))
            values = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as npz:
                keys = list(npz.files)
                key = next((k for k in ("image", "arr_0") if k in keys), None)
                if key is None and len(keys) == 1:
                    key = keys[0]
                if key is None:
                    raise data_error(path, f"npz holds {keys}; name the image array 'image'")
                with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as handle:
                    check_voxel_count(path, _npy_shape(handle))
                values = npz[key]
                if "spacing" in keys:
                    spacing = tuple(float(s) for s in np.asarray(npz["spacing"]).ravel())
                if "affine" in keys:
                    affine = np.asarray(npz["affine"], dtype=np.float64)
    except DataError:
        raise
    except Exception as exc:
        raise data_error(path, f"not a valid {fmt} array file ({_short(exc)})") from exc
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise data_error(path, f"array has dtype {values.dtype}; a numeric array is expected")
    if np.iscomplexobj(values):
        raise data_error(path, "array is complex; save the magnitude instead")
    values = np.asarray(values, dtype=np.float32)
    check_finite(path, values)
    if values.ndim == 2 or (values.ndim == 3 and not channels):
        values = values[None]
    elif not (values.ndim == 4 and (channels or values.shape[0] == 1)) and not (values.ndim == 3 and channels):
        hint = f"; if axis 0 holds channels pass --in-channels {values.shape[0]}" if values.ndim == 4 else ""
        raise data_error(path, f"array of shape {values.shape} is not a 2D image or 3D volume{hint}")
    dims = values.ndim - 1
    if spacing is not None and len(spacing) != dims:
        raise data_error(path, f"'spacing' has {len(spacing)} values for a {dims}D image")
    spacing = spacing or (1.0,) * dims
    if dims == 3 and affine is None:
        affine = np.diag([*spacing, 1.0])
    return ImageRecord(
        array=np.ascontiguousarray(values),
        spacing=spacing,
        affine=affine if dims == 3 else None,
        orientation=None,
        modality=None,
        format=fmt,
        path=path,
    )


def _read_dicom(path: Path, fmt: str, channels: bool) -> ImageRecord:
    return read_dicom_file(path, channels=channels)


_READERS = {
    "nifti": _read_nifti,
    "mgh": _read_nifti,
    "dicom": _read_dicom,
    "png": _read_pillow,
    "jpeg": _read_pillow,
    "bmp": _read_pillow,
    "tiff": _read_tiff,
    "nrrd": _read_itk,
    "mha": _read_itk,
    "mhd": _read_itk,
    "npy": _read_numpy,
    "npz": _read_numpy,
}
