"""DICOM reading with pydicom: single files, multi-frame files and series in a folder.

- Pixel values go through the modality LUT (``pydicom.pixels.apply_modality_lut``), so CT
  comes out in Hounsfield units.
- ``MONOCHROME1`` images (bright = low value) are inverted to ``MONOCHROME2`` as
  ``min + max - value`` over the image, which keeps the value range.
- A single-frame file is a plain 2D image ``(1, rows, cols)``; when its header has the patient
  geometry (``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``), that of
  the one-slice series it is goes in ``meta["slice_grid"]``, so a mask written for it lies on
  the slice in the patient (:func:`cover.data.writers.write_like`).
- A multi-frame file, or a series of single-frame files sharing a ``SeriesInstanceUID`` in one
  folder, is a volume: slices are ordered by ``ImagePositionPatient`` projected on the slice
  normal from ``ImageOrientationPatient``, spacing comes from ``PixelSpacing`` and the slice
  positions, and the result is reoriented to RAS canonical like every other volume.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID

from cover.data.record import (
    LPS_TO_RAS,
    ImageRecord,
    check_finite,
    check_voxel_count,
    data_error,
    single_channel,
    volume_record,
)


class _QuietPydicom(contextlib.ContextDecorator):
    """Silence pydicom's warnings about non-conformant headers while reading."""

    def __enter__(self) -> _QuietPydicom:
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.filterwarnings("ignore", module="pydicom")
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)


_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PREAMBLE_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` looks like a DICOM file.

    True for a ``.dcm``/``.dicom`` suffix or the ``DICM`` magic at byte 128 (files without
    extension, as written by most scanners and PACS exports).
    """
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(_PREAMBLE_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_dataset(path: Path, *, header_only: bool) -> Dataset:
    """Read a DICOM dataset, turning pydicom failures into one-line DataErrors."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise data_error(path, f"not a readable DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises assorted errors on corrupt data
        raise data_error(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    return getattr(uid, "name", str(uid)) if uid else "unknown SOP class"


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return None if meta is None else meta.get("TransferSyntaxUID", None)


def _check_pixels(path: Path, ds: Dataset) -> None:
    """Refuse datasets without pixel data or with an absurd claimed size."""
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise data_error(path, f"DICOM file has no pixel data ({_sop_name(ds)}); it is not an image")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    check_voxel_count(path, (frames, rows, cols, samples))
    syntax = _transfer_syntax(ds)
    if "PixelData" in ds and syntax is not None:
        if not syntax.is_compressed:
            bits = int(ds.get("BitsAllocated", 8) or 8)
            expected = rows * cols * frames * samples * bits // 8
            if str(ds.get("PhotometricInterpretation", "")).startswith("YBR_FULL_422"):
                expected = expected * 2 // 3  # chroma subsampled: 2 samples per pixel
            got = len(ds.PixelData)
            if got < expected:
                raise data_error(
                    path,
                    f"pixel data is truncated: {got} bytes where {rows}x{cols}x{frames} pixels need {expected}",
                )


def _decode(path: Path, ds: Dataset) -> np.ndarray:
    """Decode pixels and apply the modality LUT.

    Returns:
        float32 array ``(rows, cols)``, ``(frames, rows, cols)`` or with a trailing colour
        axis ``(..., S)``.
    """
    _check_pixels(path, ds)
    try:
        raw = ds.pixel_array
    except Exception as exc:
        syntax = _transfer_syntax(ds)
        name = getattr(syntax, "name", "unknown transfer syntax")
        if syntax is not None and syntax.is_compressed:
            raise data_error(
                path,
                f"cannot decode {name} pixel data; install a pydicom decoder plugin "
                "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg, or python-gdcm)",
            ) from exc
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(exc).__name__
        raise data_error(path, f"cannot decode DICOM pixel data ({name}): {detail}") from exc
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        try:
            values = apply_modality_lut(raw, ds)
        except Exception as exc:
            raise data_error(path, f"invalid modality LUT / rescale tags ({exc})") from exc
    else:
        values = raw
    values = np.asarray(values, dtype=np.float32)
    check_finite(path, values)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = float(values.min()) + float(values.max()) - values
    return values


def _channels_last(path: Path, values: np.ndarray, samples: int, channels: bool) -> np.ndarray:
    """Keep ``(..., S)`` colour data as channels, or its one grey value ``(...)`` (refused if colour)."""
    if samples > 1 and not channels:
        return single_channel(path, values, alpha=False, kind="a colour DICOM image")
    return values


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from the usual tags, or None."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures and measures[0].get("PixelSpacing") is not None:
            value = measures[0].PixelSpacing
            return float(value[0]), float(value[1])
    return None


def _orientation(ds: Dataset) -> np.ndarray | None:
    """ImageOrientationPatient (6 floats) from the top level or shared groups."""
    value = ds.get("ImageOrientationPatient")
    if value is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared and shared[0].get("PlaneOrientationSequence"):
            value = shared[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        return None
    return np.asarray([float(v) for v in value])


def _frame_positions(ds: Dataset, frames: int) -> list[np.ndarray] | None:
    """ImagePositionPatient of each frame of a multi-frame file, if the header gives them."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == frames:
        out = []
        for item in per_frame:
            plane = item.get("PlanePositionSequence")
            if not plane or plane[0].get("ImagePositionPatient") is None:
                return None
            out.append(np.asarray([float(v) for v in plane[0].ImagePositionPatient]))
        return out
    offsets = ds.get("GridFrameOffsetVector")
    origin = ds.get("ImagePositionPatient")
    iop = _orientation(ds)
    if offsets is not None and origin is not None and iop is not None and len(offsets) == frames:
        normal = np.cross(iop[:3], iop[3:])
        base = np.asarray([float(v) for v in origin])
        return [base + float(off) * normal for off in offsets]
    return None


def _volume_from_slices(
    path: Path,
    slices: Sequence[np.ndarray],
    positions: Sequence[np.ndarray],
    iop: np.ndarray,
    pixel_spacing: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Order slices along the normal and build the voxel -> RAS affine.

    Args:
        path: For messages.
        slices: ``K`` arrays ``(rows, cols)`` or ``(rows, cols, S)``.
        positions: ``K`` ImagePositionPatient vectors (LPS, mm).
        iop: ImageOrientationPatient: row direction (along columns) then column direction.
        pixel_spacing: (spacing between rows, spacing between columns) in mm.

    Returns:
        ``(data, affine_ras, gaps)``: ``data`` is ``(cols, rows, K[, S])`` (x-like first),
        ``affine_ras`` the ``(4, 4)`` voxel -> RAS matrix, ``gaps`` the sorted slice steps.
    """
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    depth = np.asarray([float(np.dot(p, normal)) for p in positions])
    order = np.argsort(depth, kind="stable")
    depth = depth[order]
    gaps = np.diff(depth)
    if len(slices) > 1 and np.any(gaps < 1e-4):
        raise data_error(path, "DICOM series has several slices at the same position")
    stack = np.stack([slices[i] for i in order], axis=0)  # (K, rows, cols[, S])
    data = np.swapaxes(np.moveaxis(stack, 0, 2), 0, 1)  # (cols, rows, K[, S])
    if len(slices) > 1:
        step_vec = (positions[order[-1]] - positions[order[0]]) / (len(slices) - 1)
    else:
        step_vec = normal * 1.0
    affine_ras = _grid_affine(iop, pixel_spacing, step_vec, positions[order[0]])
    if len(gaps) > 1 and (gaps.max() - gaps.min()) > 0.1 * float(np.median(gaps)):
        raise data_error(
            path,
            f"irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): missing "
            "slices or mixed acquisitions in one series",
        )
    return data, affine_ras, gaps.tolist()


def _grid_affine(
    iop: np.ndarray, pixel_spacing: tuple[float, float], step: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """The voxel -> RAS matrix of DICOM slices in their own voxel order ``(cols, rows, slices)``.

    Args:
        iop: ImageOrientationPatient: row direction (along columns) then column direction.
        pixel_spacing: (spacing between rows, spacing between columns) in mm.
        step: LPS vector from one slice to the next (mm).
        origin: ImagePositionPatient of the first slice (LPS, mm).

    Returns:
        ``(4, 4)`` float64.
    """
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = iop[:3] * pixel_spacing[1]
    affine_lps[:3, 1] = iop[3:] * pixel_spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = origin
    return LPS_TO_RAS @ affine_lps


def _slice_grid(ds: Dataset, rows: int, cols: int) -> dict[str, list] | None:
    """Patient geometry of a single-frame file as the one-slice series it is, or ``None`` without one.

    Returns:
        ``{"affine": (4, 4) voxel -> RAS of the grid (cols, rows, 1), "shape": [cols, rows, 1]}``:
        the third axis is the slice normal, one ``SliceThickness`` long (1 mm when not given).
    """
    iop, position, spacing = _orientation(ds), ds.get("ImagePositionPatient"), _pixel_spacing(ds)
    if iop is None or position is None or len(position) != 3 or spacing is None:
        return None
    thickness = float(ds.get("SliceThickness", 0) or ds.get("SpacingBetweenSlices", 0) or 1.0)
    step = np.cross(iop[:3], iop[3:]) * abs(thickness)
    affine = _grid_affine(iop, spacing, step, np.asarray([float(v) for v in position]))
    return {"affine": affine.tolist(), "shape": [cols, rows, 1]}


def _modality(ds: Dataset) -> str | None:
    value = str(ds.get("Modality", "") or "").strip().upper()
    return value or None


@_QuietPydicom()
def read_dicom_file(path: Path, *, channels: bool = False) -> ImageRecord:
    """Read one DICOM file.

    Args:
        path: The file.
        channels: Keep colour samples as channels instead of converting to grey.

    Returns:
        A plain 2D record ``(C, rows, cols)`` for single-frame files; a RAS-canonical volume
        ``(C, I, J, K)`` for multi-frame files (``affine`` from the per-frame geometry, or a
        diagonal spacing matrix with ``orientation=None`` when the header has none).

    Raises:
        DataError: Not DICOM, no pixel data, undecodable or truncated pixel data.
    """
    ds = _read_dataset(path, header_only=False)
    values = _decode(path, ds)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spacing = _pixel_spacing(ds)
    meta = {
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "sop_class": _sop_name(ds),
        "frames": frames,
    }
    values = _channels_last(path, values, samples, channels)
    if frames == 1:
        return _single_frame_record(path, ds, values, spacing, meta)
    return _multi_frame_record(path, ds, values, frames, spacing, meta)


def _single_frame_record(
    path: Path, ds: Dataset, values: np.ndarray, spacing: tuple[float, float] | None, meta: dict[str, Any]
) -> ImageRecord:
    """A plain 2D record of one frame.

    Args:
        path: The file.
        ds: Its dataset.
        values: ``(rows, cols)`` or ``(rows, cols, C)`` pixel values.
        spacing: ``(row, col)`` pixel spacing in mm, or ``None`` (1.0 is used).
        meta: Header details for the record (a written mask's slice grid is added).

    Returns:
        ``(C, rows, cols)`` float32 record without geometry.
    """
    if values.ndim == 2:
        values = values[..., None]
    grid = _slice_grid(ds, *values.shape[:-1])
    if grid is not None:  # written masks carry it (cover.data.writers)
        meta["slice_grid"] = grid
    return _unoriented_record(path, ds, values, spacing or (1.0, 1.0), None, meta)


def _multi_frame_record(
    path: Path,
    ds: Dataset,
    values: np.ndarray,
    frames: int,
    spacing: tuple[float, float] | None,
    meta: dict[str, Any],
) -> ImageRecord:
    """A volume of a multi-frame file: RAS canonical with the per-frame geometry, else frames as they are.

    Args:
        path: The file.
        ds: Its dataset.
        values: ``(frames, rows, cols)`` or ``(frames, rows, cols, C)`` pixel values.
        frames: Number of frames.
        spacing: ``(row, col)`` pixel spacing in mm, or ``None``.
        meta: Header details for the record (slice gaps are added).

    Returns:
        ``(C, I, J, K)`` RAS-canonical record, or ``(C, frames, rows, cols)`` with a diagonal
        spacing matrix and ``orientation=None`` when the header has no patient geometry.
    """
    iop = _orientation(ds)
    positions = _frame_positions(ds, frames)
    if iop is not None and positions is not None and spacing is not None:
        data, affine, gaps = _volume_from_slices(path, list(values), positions, iop, spacing)
        meta["slice_gaps"] = gaps
        return volume_record(data, affine, path=path, fmt="dicom", modality=_modality(ds), meta=meta)
    # No patient geometry: keep (frames, rows, cols) with a diagonal spacing matrix.
    row_sp, col_sp = spacing or (1.0, 1.0)
    step = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
    if values.ndim == 3:
        values = values[..., None]
    affine = np.diag([step, row_sp, col_sp, 1.0])
    return _unoriented_record(path, ds, values, (step, row_sp, col_sp), affine, meta)


def _unoriented_record(
    path: Path,
    ds: Dataset,
    values: np.ndarray,
    spacing: tuple[float, ...],
    affine: np.ndarray | None,
    meta: dict[str, Any],
) -> ImageRecord:
    """A DICOM record in the file's own axis order, without patient orientation.

    Args:
        path: The file.
        ds: Its dataset (the modality).
        values: ``(*spatial, C)`` pixel values, channels last.
        spacing: Spacing per spatial axis in mm.
        affine: A diagonal spacing matrix, or ``None``.
        meta: Header details.

    Returns:
        ``(C, *spatial)`` float32 record.
    """
    array = np.ascontiguousarray(np.moveaxis(values, -1, 0), dtype=np.float32)
    return ImageRecord(
        array=array,
        spacing=spacing,
        affine=affine,
        orientation=None,
        modality=_modality(ds),
        format="dicom",
        path=path,
        meta=meta,
    )


def _series_key(ds: Dataset) -> str | None:
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def _is_slice(ds: Dataset) -> bool:
    """Single-frame image with the geometry needed to stack it into a volume."""
    return (
        any(tag in ds for tag in _PIXEL_TAGS)
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
        and ds.get("ImagePositionPatient") is not None
        and _orientation(ds) is not None
    )


@_QuietPydicom()
def scan_dicom_folder(folder: Path, files: Sequence[Path] | None = None) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group the DICOM files of one folder into volume series and loose files.

    A group of files sharing a ``SeriesInstanceUID`` is a series when it has at least two
    single-frame slices with ``ImagePositionPatient``/``ImageOrientationPatient``, the same
    matrix size and orientation, and distinct positions along the normal. Everything else
    (single slices, multi-frame files, copies of one slice, unreadable headers) is loose.

    Args:
        folder: The folder (not searched recursively).
        files: Its DICOM files if already known.

    Returns:
        ``(series, loose)``: series UID -> sorted file list, and the remaining files.
    """
    if files is None:
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    loose: list[Path] = []
    for file in files:
        try:
            # defer_size: large values (pixel data) are not loaded, but their presence is
            ds = pydicom.dcmread(file, defer_size="4 KB", force=True)
            key = _series_key(ds)
            usable = key is not None and _is_slice(ds)
        except Exception:  # unreadable or malformed header: read (and fail) on its own
            usable = False
        if usable:
            groups[key].append((file, ds))
        else:
            loose.append(file)
    series: dict[str, list[Path]] = {}
    for key, members in groups.items():
        try:
            ok = len(members) >= 2 and _consistent(members)
        except Exception:  # malformed geometry values
            ok = False
        if not ok:
            loose.extend(path for path, _ in members)
        else:
            series[key] = sorted(path for path, _ in members)
    return series, sorted(loose)


def _consistent(members: Sequence[tuple[Path, Dataset]]) -> bool:
    """Same matrix and orientation, and distinct positions along the normal."""
    first = members[0][1]
    iop = _orientation(first)
    size = (first.get("Rows"), first.get("Columns"))
    normal = np.cross(iop[:3], iop[3:])
    depths = []
    for _, ds in members:
        other = _orientation(ds)
        if (ds.get("Rows"), ds.get("Columns")) != size or not np.allclose(other, iop, atol=1e-3):
            return False
        depths.append(float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
    return len(set(np.round(depths, 4))) == len(depths)


@_QuietPydicom()
def read_dicom_series(folder: Path, *, channels: bool = False) -> ImageRecord:
    """Read the DICOM series stored in ``folder`` as one RAS-canonical volume.

    Args:
        folder: Folder holding the slices of exactly one series (other loose DICOM files in
            the folder are ignored).
        channels: Keep colour samples as channels.

    Returns:
        Record with ``array`` ``(C, I, J, K)``, ``format="dicom-series"``.

    Raises:
        DataError: No series, several series, or a slice that cannot be decoded.
    """
    series, _ = scan_dicom_folder(folder)
    if not series:
        raise data_error(folder, "folder holds no DICOM series (need 2+ slices with positions)")
    if len(series) > 1:
        raise data_error(
            folder,
            f"folder holds {len(series)} DICOM series; put each series in its own folder",
        )
    uid, files = next(iter(series.items()))
    datasets = [_read_dataset(f, header_only=False) for f in files]
    first = datasets[0]
    rows, cols = int(first.Rows), int(first.Columns)
    check_voxel_count(folder, (len(files), rows, cols, int(first.get("SamplesPerPixel", 1))))
    slices, positions = [], []
    mono1 = str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    for file, ds in zip(files, datasets, strict=True):
        values = _decode(file, ds)
        if mono1:  # undo the per-slice inversion; invert once over the whole volume below
            values = float(values.min()) + float(values.max()) - values
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        slices.append(_channels_last(file, values, samples, channels))
        positions.append(np.asarray([float(v) for v in ds.ImagePositionPatient]))
    spacing = _pixel_spacing(first) or (1.0, 1.0)
    data, affine, gaps = _volume_from_slices(folder, slices, positions, _orientation(first), spacing)
    if mono1:
        data = float(data.min()) + float(data.max()) - data
    meta = {
        "series_uid": uid,
        "n_slices": len(files),
        "photometric": str(first.get("PhotometricInterpretation", "")),
        "slice_gaps": gaps,
    }
    return volume_record(data, affine, path=folder, fmt="dicom-series", modality=_modality(first), meta=meta)
