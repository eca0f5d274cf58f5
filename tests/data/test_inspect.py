"""``inspect_data`` on real DICOM (pydicom-data) and NIfTI (nilearn MNI152) files."""

from __future__ import annotations

from pathlib import Path

import nilearn
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cover.data.inspect import inspect_data, run_inspect
from cover.data.readers import read_image
from cover.errors import DataError

MNI_T1 = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
REAL_DICOM = ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "US1_UNCR.dcm", "rtplan.dcm"]


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    for name in REAL_DICOM:
        (root / name).symlink_to(get_testdata_file(name))
    (root / "brain").mkdir()
    (root / "brain" / MNI_T1.name).symlink_to(MNI_T1)
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_text("not a png")
    return root


def test_inspect_real_files(real_folder):
    report = inspect_data(real_folder)
    by_name = {f.path.name: f for f in report.files}
    assert set(by_name) == {
        "CT_small.dcm",
        "MR_small.dcm",
        "RG1_UNCI.dcm",
        MNI_T1.name,
    }
    ct = by_name["CT_small.dcm"]
    assert ct.modality == "CT" and ct.shape == (1, 128, 128)
    assert ct.minimum < -500 and ct.spacing == pytest.approx((0.661468, 0.661468))  # HU
    assert by_name["MR_small.dcm"].modality == "MR"
    assert by_name["RG1_UNCI.dcm"].modality == "CR"
    mni = by_name[MNI_T1.name]
    assert mni.shape == (1, 197, 233, 189) and mni.orientation == "RAS"
    assert mni.spacing == (1.0, 1.0, 1.0) and mni.maximum > mni.minimum
    failures = {p.name: reason for p, reason in report.failures}
    assert set(failures) == {"rtplan.dcm", "broken.png", "US1_UNCR.dcm"}
    # a colour ultrasound is not mixed into grey, as training would not (in_channels: 3 keeps it)
    assert "colour DICOM image whose 3 samples per pixel differ" in failures["US1_UNCR.dcm"]
    assert inspect_data(real_folder / "US1_UNCR.dcm", channels=True).files[0].modality == "US"
    assert "no pixel data" in failures["rtplan.dcm"]
    assert [p.name for p in report.ignored] == ["notes.txt"]
    assert report.counts() == {"dicom": (3, 2), "nifti": (1, 0), "png": (0, 1)}


def test_monochrome1_radiograph_is_inverted(real_folder):
    # RG1_UNCI is a real MONOCHROME1 radiograph (no rescale): read back as min + max - raw.
    record = read_image(real_folder / "RG1_UNCI.dcm")
    assert record.meta["photometric"] == "MONOCHROME1"
    raw = pydicom.dcmread(real_folder / "RG1_UNCI.dcm").pixel_array
    np.testing.assert_allclose(record.array[0], raw.min() + raw.max() - raw.astype(np.float32))


def test_report_text_is_aligned(real_folder):
    text = run_inspect(str(real_folder))
    lines = text.splitlines()
    assert lines[0].startswith(str(real_folder))
    assert "4 image(s) readable, 3 unreadable, 1 other file(s) ignored" in lines[0]
    header = next(line for line in lines if line.startswith("file "))
    rows = [line for line in lines if line.startswith(("CT_small", "MR_small", "brain/"))]
    assert len(rows) == 3
    column = header.index("format")
    assert all(row[column - 2 : column] == "  " for row in rows)
    assert "197x233x189" in text and "RAS" in text
    assert "rtplan.dcm: DICOM file has no pixel data" in text


def test_inspect_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run_inspect(str(tmp_path / "nothing"))


def test_inspect_shows_each_files_own_shape_and_orientation(tmp_path):
    """Not the RAS layout cover reads volumes in: an LPS NRRD is LPS, a permuted NIfTI keeps its shape."""
    import nibabel as nib
    import SimpleITK as sitk  # noqa: N813

    image = sitk.GetImageFromArray(np.zeros((6, 5, 4), dtype=np.int16))  # size (x, y, z) = (4, 5, 6)
    image.SetSpacing((0.5, 0.75, 2.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    affine = np.array([[0, 0, -3.0, 0], [-1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), affine), str(tmp_path / "mr.nii.gz"))
    report = inspect_data(tmp_path)
    by_name = {f.path.name: f for f in report.files}
    ct, mr = by_name["ct.nrrd"], by_name["mr.nii.gz"]
    assert (ct.stored_shape, ct.stored_orientation, ct.stored_spacing) == ((4, 5, 6), "LPS", (0.5, 0.75, 2.0))
    assert ct.orientation == "RAS"  # as read
    assert mr.stored_shape == (7, 8, 9) and mr.stored_orientation == "".join(nib.aff2axcodes(affine)) == "PSL"
    assert mr.stored_spacing == (1.0, 2.0, 3.0) and mr.shape == (1, 9, 7, 8)
    text = run_inspect(str(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("ct.nrrd"))
    assert "4x5x6" in row and "LPS" in row and "0.5x0.75x2" in row, row
    row = next(line for line in text.splitlines() if line.startswith("mr.nii.gz"))
    assert "7x8x9" in row and "PSL" in row, row


def test_numpy_feature_arrays_in_a_folder_are_not_listed_as_images(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), str(tmp_path / "scan.nii.gz"))
    np.save(tmp_path / "features.npy", np.zeros((64, 8, 8), np.float32))
    np.savez(tmp_path / "embeddings.npz", z=np.zeros((10, 32)))
    report = inspect_data(tmp_path)
    assert [f.path.name for f in report.files] == ["scan.nii.gz"]
    assert {p.name: shape for p, shape in report.arrays} == {
        "features.npy": "64x8x8 float32",
        "embeddings.npz": "z: 10x32",
    }
    text = run_inspect(str(tmp_path))
    assert "1 image(s) readable" in text and "2 NumPy array(s) not taken as images" in text
    assert "features.npy: 64x8x8 float32" in text
    assert inspect_data(tmp_path / "features.npy").files[0].shape == (1, 64, 8, 8)  # named: read
