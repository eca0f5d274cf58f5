"""write_like: a mask written for an input lies on exactly that input's grid, in its own format.

Every test writes a file with the format's own library (nibabel, SimpleITK, Pillow, tifffile,
pydicom), reads it with :func:`read_image` (which reorients volumes to RAS), writes the record's
own array back with :func:`write_like` and checks with the same library that the output has the
source's array (same shape, axis order and values) and header (spacing, origin, direction /
affine). Geometries are oblique, flipped and axis-permuted and shapes are non-cubic, so a missed
flip or transposition changes the array or the header.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import tifffile
from PIL import Image

from cover.data.readers import read_image, write_like
from cover.data.record import as_planar


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


#: Directions (columns = world direction of array axes i, j, k): identity, flipped, permuted
#: with flips, and oblique (permuted + flipped + rotated by 12 degrees).
DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float),
    "oblique": _rotation(0, 12.0) @ np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], dtype=float),
}
SHAPE = (4, 5, 6)  # (i, j, k): non-cubic
SPACING = np.array([0.7, 1.3, 2.5])
ORIGIN = np.array([25.7, -125.8, -320.0])


def _values(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct integer values (no symmetry): any flip or transposition changes the array."""
    return (np.arange(int(np.prod(shape))) % 251).reshape(shape).astype(np.uint8)


def _mask(path) -> tuple[np.ndarray, object]:
    """The record of ``path`` and its own array as an integer 'prediction' (RAS canonical order)."""
    record = read_image(path)
    return np.rint(record.array[0]).astype(np.uint8), record


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_mask_has_the_source_array_and_affine(tmp_path, direction, suffix):
    affine = np.eye(4)
    affine[:3, :3] = DIRECTIONS[direction] * SPACING
    affine[:3, 3] = ORIGIN
    data = _values(SHAPE)
    source = tmp_path / f"scan{suffix}"
    nib.save(nib.Nifti1Image(data, affine), str(source))
    mask, record = _mask(source)
    out = nib.load(str(write_like(mask, record, tmp_path / f"mask{suffix}")))
    original = nib.load(str(source))
    assert out.shape == SHAPE
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)
    np.testing.assert_allclose(out.affine, original.affine, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), original.affine, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 9), (6, 9, 1)])
def test_2d_nifti_mask_keeps_the_source_shape_and_affine(tmp_path, shape):
    affine = np.array([[0, -0.8, 0, 12.0], [-1.1, 0, 0, 30.0], [0, 0, 3.0, -4.0], [0, 0, 0, 1]])
    data = _values(shape)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "slice.nii.gz"))
    mask, record = _mask(tmp_path / "slice.nii.gz")
    out = nib.load(str(write_like(mask, record, tmp_path / "mask.nii.gz")))
    assert out.shape == shape
    np.testing.assert_array_equal(np.asarray(out.dataobj), data)
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)


def _itk_volume(direction: np.ndarray) -> sitk.Image:
    data = _values(SHAPE[::-1])  # ITK's numpy view is (z, y, x)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(tuple(SPACING))
    image.SetOrigin(tuple(ORIGIN))
    image.SetDirection(tuple(direction.ravel()))
    return image


def _assert_same_itk(out: sitk.Image, source: sitk.Image) -> None:
    assert out.GetSize() == source.GetSize()
    np.testing.assert_allclose(out.GetSpacing(), source.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.GetOrigin(), source.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.GetDirection(), source.GetDirection(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(source))


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_itk_mask_has_the_source_array_and_header(tmp_path, direction, suffix):
    source = _itk_volume(DIRECTIONS[direction])
    sitk.WriteImage(source, str(tmp_path / f"scan{suffix}"))
    mask, record = _mask(tmp_path / f"scan{suffix}")
    out = sitk.ReadImage(str(write_like(mask, record, tmp_path / f"mask{suffix}")))
    _assert_same_itk(out, sitk.ReadImage(str(tmp_path / f"scan{suffix}")))


def test_identity_nrrd_mask_is_not_flipped(tmp_path):
    """The reported case: identity direction came back as diag(-1, -1, 1) with a flipped array."""
    source = _itk_volume(np.eye(3))
    sitk.WriteImage(source, str(tmp_path / "lung.nrrd"))
    mask, record = _mask(tmp_path / "lung.nrrd")
    out = sitk.ReadImage(str(write_like(mask, record, tmp_path / "mask.nrrd")))
    assert out.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert out.GetOrigin() == pytest.approx(tuple(ORIGIN), abs=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(source))


def test_itk_2d_mask_keeps_origin_and_direction(tmp_path):
    source = sitk.GetImageFromArray(_values((5, 8)))
    source.SetSpacing((0.3, 0.45))
    source.SetOrigin((-4.0, 17.5))
    source.SetDirection((0.0, -1.0, 1.0, 0.0))
    sitk.WriteImage(source, str(tmp_path / "plane.mha"))
    mask, record = _mask(tmp_path / "plane.mha")
    out = sitk.ReadImage(str(write_like(mask, record, tmp_path / "mask.mha")))
    _assert_same_itk(out, source)


@pytest.mark.parametrize("direction", ["flipped", "oblique"])
def test_volume_written_in_another_format_keeps_the_source_voxel_order(tmp_path, direction):
    """An NRRD source written as NIfTI: same voxel order as the NRRD, the same world geometry."""
    source = _itk_volume(DIRECTIONS[direction])
    sitk.WriteImage(source, str(tmp_path / "scan.nrrd"))
    mask, record = _mask(tmp_path / "scan.nrrd")
    out = nib.load(str(write_like(mask, record, tmp_path / "mask.nii.gz")))
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.transpose(sitk.GetArrayFromImage(source), (2, 1, 0)))
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        lps = np.asarray(source.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose((out.affine @ [*index, 1])[:3], lps * [-1, -1, 1], atol=1e-4)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_plain_image_mask_has_the_source_shape(tmp_path, suffix):
    data = _values((5, 9)) * 0 + np.arange(9, dtype=np.uint8)[None] * 20 + np.arange(5, dtype=np.uint8)[:, None]
    Image.fromarray(data).save(tmp_path / f"photo{suffix}", **({"quality": 100} if suffix == ".jpg" else {}))
    record = read_image(tmp_path / f"photo{suffix}")
    mask = (record.array[0] > 90).astype(np.uint8)
    out = np.asarray(Image.open(write_like(mask, record, tmp_path / "mask.png")))
    assert out.shape == (5, 9)
    np.testing.assert_array_equal(out, mask)
    expected = np.asarray(Image.open(tmp_path / f"photo{suffix}").convert("L")) > 90
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("shape", [(5, 9), (3, 5, 7)])
def test_tiff_mask_has_the_source_axes(tmp_path, shape):
    data = _values(shape)
    tifffile.imwrite(tmp_path / "stack.tif", data, photometric="minisblack")
    mask, record = _mask(tmp_path / "stack.tif")
    out = tifffile.imread(write_like(mask, record, tmp_path / "mask.tif"))
    assert out.shape == shape
    np.testing.assert_array_equal(out, data)


def test_dicom_series_mask_is_a_nifti_in_the_series_order_and_geometry(tmp_path, make_dicom):
    """A DICOM series gets a NIfTI: axis 0 = columns, 1 = rows, 2 = slices along the normal.

    Oracle: pydicom's own pixel arrays and each slice's ImagePositionPatient/ImageOrientationPatient.
    """
    import pydicom

    row_dir = np.array([0.0, 0.96126169, -0.27563736])  # oblique, rows run posteriorly/inferiorly
    col_dir = np.array([0.0, 0.27563736, 0.96126169])
    col_dir = -col_dir  # and rows ordered against it (a flipped axis)
    normal = np.cross(row_dir, col_dir)
    spacing = (0.6, 0.9)  # (between rows, between columns)
    folder = tmp_path / "series"
    rng = np.random.default_rng(0)
    order = rng.permutation(4)
    for file_index, k in enumerate(order):
        position = np.array([10.0, -20.0, 30.0]) + 2.5 * k * normal
        pixels = (_values((5, 7)).astype(np.int16) + 40 * int(k)).astype(np.int16)
        make_dicom(
            folder / f"im{file_index}.dcm",
            pixels,
            position=position,
            orientation=[*row_dir, *col_dir],
            spacing=spacing,
            series_uid="1.2.826.0.1.3680043.8.498.77",
        )
    mask, record = _mask(folder)
    out = nib.load(str(write_like(mask, record, tmp_path / "mask.nii.gz")))
    assert out.shape == (7, 5, 4)
    data = np.asarray(out.dataobj)
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        k = int(np.round(np.dot(ipp - [10.0, -20.0, 30.0], normal) / 2.5))
        np.testing.assert_array_equal(data[:, :, k], ds.pixel_array.T)
        for r, c in [(0, 0), (4, 6), (2, 5)]:
            lps = ipp + c * spacing[1] * row_dir + r * spacing[0] * col_dir
            np.testing.assert_allclose((out.affine @ [c, r, k, 1])[:3], lps * [-1, -1, 1], atol=1e-4)


@pytest.mark.parametrize("orientation", ["axial", "sagittal"])
def test_single_dicom_file_mask_carries_the_slice_geometry(tmp_path, orientation):
    """pydicom's CT_small.dcm (and a sagittal copy): the mask used to be a (rows, cols) NIfTI at the
    origin with an identity direction; SimpleITK must read it on the image's own grid.

    Oracle: SimpleITK reading the DICOM file itself, and pydicom's header.
    """
    import pydicom
    from pydicom.data import get_testdata_file

    source = tmp_path / "CT_small.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if orientation == "sagittal":  # rows run along -z, columns along +y
        ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    ds.save_as(source)
    record = read_image(source)
    assert record.spatial_shape == (ds.Rows, ds.Columns)  # still the plain 2D image the network sees
    mask = np.zeros(record.spatial_shape, np.uint8)
    mask[5:20, 30:90], mask[100, 7] = 1, 2  # asymmetric: a transposition or flip moves it
    out = write_like(mask, record, tmp_path / "CT_small.dcm.nii.gz")
    image, written = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), [*image.GetSpacing()[:2], float(ds.SliceThickness)], atol=1e-5)
    assert sitk.GetArrayFromImage(image).shape == sitk.GetArrayFromImage(written).shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written)[0], mask)
    ipp, iop = np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float)
    affine = nib.load(str(out)).affine
    for r, c in [(100, 7), (5, 30)]:  # pixel (r, c) lies at IPP + c * col spacing * row dir + r * row spacing * col dir
        lps = ipp + c * float(ds.PixelSpacing[1]) * iop[:3] + r * float(ds.PixelSpacing[0]) * iop[3:]
        np.testing.assert_allclose((affine @ [c, r, 0, 1])[:3], lps * [-1, -1, 1], atol=1e-4)


def test_npy_volume_mask_keeps_its_axes(tmp_path):
    data = _values((3, 4, 5))
    np.save(tmp_path / "v.npy", data)
    mask, record = _mask(tmp_path / "v.npy")
    np.testing.assert_array_equal(np.load(write_like(mask, record, tmp_path / "m.npy")), data)


@pytest.mark.parametrize("kind", ["nifti-2d", "nifti-3d", "nrrd", "mha-middle"])
def test_mask_of_a_one_slice_volume_used_in_2d_goes_back_on_the_volume(tmp_path, kind):
    """A 2D model on a one-slice volume (a 2D view of it): the mask has the file's own shape and header."""
    if kind.startswith("nifti"):
        shape = (6, 9) if kind == "nifti-2d" else (6, 9, 1)
        affine = np.array([[0, -0.8, 0, 12.0], [-1.1, 0, 0, 30.0], [0, 0, 3.0, -4.0], [0, 0, 0, 1]])
        data = _values(shape)
        source = tmp_path / "slice.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(source))
    else:
        size = (1, 6, 9) if kind == "nrrd" else (6, 1, 9)  # ITK (z, y, x): a thin z or a thin y
        image = sitk.GetImageFromArray(_values(size))
        image.SetSpacing((0.7, 1.3, 2.5))
        image.SetOrigin(tuple(ORIGIN))
        image.SetDirection(tuple(DIRECTIONS["oblique"].ravel()))
        source = tmp_path / ("slice.nrrd" if kind == "nrrd" else "slice.mha")
        sitk.WriteImage(image, str(source))
    planar = as_planar(read_image(source))
    assert planar is not None and planar.spatial_dims == 2
    mask = np.rint(planar.array[0]).astype(np.uint8)
    out = write_like(mask, planar, tmp_path / ("mask" + source.name[len("slice") :]))
    if kind.startswith("nifti"):
        written = nib.load(str(out))
        assert written.shape == shape
        np.testing.assert_array_equal(np.asarray(written.dataobj), data)
        np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    else:
        _assert_same_itk(sitk.ReadImage(str(out)), sitk.ReadImage(str(source)))
