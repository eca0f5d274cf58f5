"""Builders that write small real medical image files for the data-layer tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    slope: float | None = None,
    intercept: float | None = None,
    photometric: str = "MONOCHROME2",
    position: Sequence[float] | None = None,
    orientation: Sequence[float] | None = None,
    spacing: Sequence[float] | None = (0.5, 0.5),
    series_uid: str | None = None,
    with_pixels: bool = True,
    rows_cols: tuple[int, int] | None = None,
    frames: int | None = None,
) -> Path:
    """Write a minimal, valid DICOM file (explicit VR little endian) with real pixel data.

    ``pixels`` is ``(rows, cols)`` or ``(frames, rows, cols)`` of uint8/uint16/int16.
    """
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientID = "TEST"
    rows, cols = rows_cols or pixels.shape[-2:]
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if frames is not None or pixels.ndim == 3:
        ds.NumberOfFrames = frames if frames is not None else pixels.shape[0]
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
        ds.RescaleType = "HU"
    if spacing is not None:
        ds.PixelSpacing = [float(s) for s in spacing]
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if with_pixels:
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` with ``affine`` (default identity) as NIfTI-1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    nib.save(image, str(path))
    return path


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    return write_dicom


@pytest.fixture
def make_nifti() -> Callable[..., Path]:
    return write_nifti


def one_line(message: str) -> bool:
    return "\n" not in message and len(message) < 400
