"""Readers and write_like: real tiny files written with the format libraries, read back."""

from __future__ import annotations

import gzip
import random
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import tifffile
from PIL import Image

from cover.data.readers import detect_format, read_image, write_like
from cover.errors import DataError


def _world(affine, index):
    return (affine @ np.r_[np.asarray(index, dtype=float), 1.0])[:3]


def _index(affine, world):
    return np.round(np.linalg.solve(affine, np.r_[world, 1.0])[:3]).astype(int)


def _assert_dataerror(path, match, **kwargs):
    with pytest.raises(DataError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message
    assert match in message, message
    return message


# ----------------------------------------------------------------------------- NIfTI


def test_nifti_ras_roundtrip(tmp_path, make_nifti):
    data = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, -20, 30]
    rec = read_image(make_nifti(tmp_path / "a.nii.gz", data, affine))
    assert rec.format == "nifti"
    assert rec.array.dtype == np.float32 and rec.array.shape == (1, 4, 5, 6)
    np.testing.assert_allclose(rec.array[0], data)
    assert rec.spacing == (2.0, 3.0, 4.0)
    assert rec.orientation == "RAS"
    assert rec.spatial_dims == 3
    np.testing.assert_allclose(rec.affine, affine)


@pytest.mark.parametrize(
    "columns",
    [
        [[-2, 0, 0], [0, -3, 0], [0, 0, 4]],  # LPS
        [[0, 0, 4], [-2, 0, 0], [0, -3, 0]],  # axes permuted: i->S, j->L, k->P
    ],
)
def test_nifti_other_orientation_comes_back_ras(tmp_path, make_nifti, columns):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(columns, dtype=float).T
    affine[:3, 3] = [5.0, -7.0, 11.0]
    path = make_nifti(tmp_path / "o.nii", data, affine)
    rec = read_image(path)
    assert rec.orientation == "RAS"
    assert nib.aff2axcodes(rec.affine) == ("R", "A", "S")
    assert sorted(rec.spacing) == [2.0, 3.0, 4.0]
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3), (2, 0, 5)]:
        new = _index(rec.affine, _world(affine, index))
        assert rec.array[0][tuple(new)] == data[index]
    assert rec.meta["original_orientation"] != "RAS"


def test_write_like_nifti_restores_original_grid(tmp_path, make_nifti):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    affine = np.diag([-1.5, -1.0, 2.0, 1.0])
    rec = read_image(make_nifti(tmp_path / "lps.nii.gz", data, affine))
    mask = (rec.array[0] > 30).astype(np.uint8)
    out = write_like(mask, rec, tmp_path / "mask.nii.gz")
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), (data > 30).astype(np.uint8))


def test_nifti_mgh_and_2d_slab(tmp_path, make_nifti):
    rec = read_image(make_nifti(tmp_path / "flat.nii.gz", np.ones((6, 7, 1), np.int16)))
    assert rec.array.shape == (1, 6, 7, 1)


# ----------------------------------------------------------------------------- DICOM

AXIAL = [1, 0, 0, 0, 1, 0]


def test_dicom_ct_in_hounsfield_units(tmp_path, make_dicom):
    raw = np.array([[0, 1000], [1024, 2048]], dtype=np.uint16)
    path = make_dicom(tmp_path / "ct.dcm", raw, slope=1.0, intercept=-1024, spacing=(0.7, 0.8))
    rec = read_image(path)
    assert rec.format == "dicom" and rec.modality == "CT"
    assert rec.array.shape == (1, 2, 2) and rec.affine is None
    np.testing.assert_allclose(rec.array[0], raw.astype(np.float32) - 1024)
    assert rec.spacing == (0.7, 0.8)

    scaled = make_dicom(tmp_path / "ct2.dcm", raw, slope=2.0, intercept=-1000)
    np.testing.assert_allclose(read_image(scaled).array[0], raw * 2.0 - 1000)


def test_dicom_monochrome1_inverted(tmp_path, make_dicom):
    raw = np.array([[0, 100], [200, 50]], dtype=np.uint16)
    path = make_dicom(tmp_path / "cr.dcm", raw, modality="CR", photometric="MONOCHROME1")
    rec = read_image(path)
    assert rec.modality == "CR"
    np.testing.assert_allclose(rec.array[0], [[200, 100], [0, 150]])


def test_dicom_without_extension_detected_by_preamble(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "IM0001", np.zeros((3, 3), np.uint16))
    assert detect_format(path) == "dicom"
    assert read_image(path).array.shape == (1, 3, 3)


def _write_series(folder, make_dicom, n=5, step=2.5, shuffle=True):
    uid = "1.2.826.0.1.3680043.8.498.1"
    slices = []
    order = list(range(n))
    if shuffle:
        random.Random(3).shuffle(order)
    for name_index, k in enumerate(order):
        pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) + 100 * k).astype(np.uint16)
        slices.append(pixels)
        make_dicom(
            folder / f"slice_{name_index:03d}.dcm",
            pixels,
            slope=1.0,
            intercept=-10.0 * k,  # differing rescale per slice must be honoured
            position=[-30.0, -40.0, 12.0 + step * k],
            orientation=AXIAL,
            spacing=(0.6, 0.9),
            series_uid=uid,
        )
    return [(np.arange(12).reshape(3, 4) + 100 * k) - 10.0 * k for k in range(n)]


def test_dicom_series_shuffled_comes_back_in_slice_order(tmp_path, make_dicom):
    folder = tmp_path / "series"
    expected = _write_series(folder, make_dicom)
    rec = read_image(folder)
    assert rec.format == "dicom-series" and rec.modality == "CT"
    assert rec.orientation == "RAS"
    assert rec.array.shape[0] == 1 and sorted(rec.array.shape[1:]) == [3, 4, 5]
    assert sorted(rec.spacing) == pytest.approx([0.6, 0.9, 2.5])
    # world coordinates: pixel (r, c) of slice k sits at IPP_k + c*0.9*x + r*0.6*y (LPS)
    for k in range(5):
        for r, c in [(0, 0), (2, 3), (1, 2)]:
            lps = np.array([-30.0 + c * 0.9, -40.0 + r * 0.6, 12.0 + 2.5 * k])
            ras = lps * [-1, -1, 1]
            value = rec.array[0][tuple(_index(rec.affine, ras))]
            assert value == expected[k][r, c]
    # superior slices come later along the S axis
    z_axis = int(np.argmax(np.abs(rec.affine[2, :3])))
    assert rec.affine[2, z_axis] > 0


def test_dicom_series_missing_slice_is_refused(tmp_path, make_dicom):
    folder = tmp_path / "gappy"
    _write_series(folder, make_dicom, n=4, shuffle=False)
    (folder / "slice_002.dcm").unlink()
    make_dicom(
        folder / "far.dcm",
        np.zeros((3, 4), np.uint16),
        position=[-30, -40, 200],
        orientation=AXIAL,
        series_uid="1.2.826.0.1.3680043.8.498.1",
    )
    msg = str(pytest.raises(DataError, read_image, folder).value)
    assert "irregular slice spacing" in msg and "gappy" in msg


def test_dicom_multiframe_is_a_volume(tmp_path, make_dicom):
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    rec = read_image(make_dicom(tmp_path / "mf.dcm", frames, modality="US"))
    assert rec.array.shape == (1, 3, 4, 5) and rec.spatial_dims == 3
    np.testing.assert_allclose(rec.array[0], frames)


# ----------------------------------------------------------------- PNG / TIFF / ITK / NPY


def test_png_8bit_16bit_and_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")
    rec = read_image(tmp_path / "g.png")
    assert rec.format == "png" and rec.affine is None and rec.spacing == (1.0, 1.0)
    np.testing.assert_allclose(rec.array[0], grey)

    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    rec = read_image(tmp_path / "d.png")
    np.testing.assert_allclose(rec.array[0], deep)
    assert rec.array.max() > 255

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 100
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png: is a colour image \(mode RGB\) whose 3 samples per pixel differ"):
        read_image(tmp_path / "c.png")  # never mixed into grey without being asked
    np.testing.assert_array_equal(read_image(tmp_path / "c.png", channels=True).array[:, 0, 0], [100, 200, 0])


def test_tiff_16bit_and_stack(tmp_path):
    image = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", image)
    rec = read_image(tmp_path / "a.tif")
    assert rec.format == "tiff" and rec.array.shape == (1, 4, 5)
    np.testing.assert_allclose(rec.array[0], image)
    stack = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    tifffile.imwrite(tmp_path / "s.tiff", stack, photometric="minisblack")
    rec = read_image(tmp_path / "s.tiff")
    assert rec.array.shape == (1, 3, 4, 5)
    np.testing.assert_allclose(rec.array[0], stack)
    planar = np.random.default_rng(0).integers(0, 255, (3, 4, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", planar, photometric="rgb", planarconfig="separate")
    rec = read_image(tmp_path / "rgb.tif", channels=True)
    assert rec.array.shape == (3, 4, 5)
    np.testing.assert_allclose(rec.array, planar)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_volume_geometry(tmp_path, suffix):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (z, y, x)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((10.0, 20.0, -5.0))
    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(image, str(path))
    rec = read_image(path)
    assert rec.orientation == "RAS" and rec.array.shape == (1, 4, 3, 2)
    assert rec.spacing == pytest.approx((0.5, 0.7, 2.0))
    for x, y, z in [(0, 0, 0), (3, 2, 1), (1, 2, 0)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint((x, y, z)))
        new = _index(rec.affine, lps * [-1, -1, 1])
        assert rec.array[0][tuple(new)] == data[z, y, x]
    # write_like back to ITK keeps geometry and values
    out = write_like(rec.array, rec, tmp_path / f"w{suffix}")
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))
    for x, y, z in [(0, 0, 0), (3, 2, 1)]:
        point = image.TransformIndexToPhysicalPoint((x, y, z))
        assert back.GetPixel(back.TransformPhysicalPointToIndex(point)) == data[z, y, x]


def test_itk_2d_image(tmp_path):
    image = sitk.GetImageFromArray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    image.SetSpacing((0.3, 0.4))
    sitk.WriteImage(image, str(tmp_path / "p.nrrd"))
    rec = read_image(tmp_path / "p.nrrd")
    assert rec.array.shape == (1, 2, 3) and rec.spacing == pytest.approx((0.4, 0.3))


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 5), np.uint8))
    assert read_image(tmp_path / "a.npy").array.shape == (1, 4, 5)
    np.save(tmp_path / "v.npy", np.ones((3, 4, 5), np.float64))
    rec = read_image(tmp_path / "v.npy")
    assert rec.array.shape == (1, 3, 4, 5) and rec.array.dtype == np.float32
    np.savez(tmp_path / "z.npz", image=np.zeros((3, 4, 5)), spacing=np.array([1.0, 2.0, 3.0]))
    assert read_image(tmp_path / "z.npz").spacing == (1.0, 2.0, 3.0)


def test_write_like_png_and_npy(tmp_path):
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "ref.png")
    rec = read_image(tmp_path / "ref.png")
    mask = np.array([[0, 1, 2, 3]] * 3)
    out = write_like(mask, rec, tmp_path / "mask.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), mask)
    assert np.asarray(Image.open(out)).dtype == np.uint8
    big = mask * 1000
    out16 = write_like(big, rec, tmp_path / "mask16.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out16)), big)
    out_npy = write_like(mask[None], rec, tmp_path / "m.npy")
    np.testing.assert_array_equal(np.load(out_npy), mask)
    with pytest.raises(DataError, match="non-negative integers"):
        write_like(mask * 0.5, rec, tmp_path / "bad.png")
    with pytest.raises(DataError, match="does not match"):
        write_like(np.zeros((5, 5)), rec, tmp_path / "bad2.png")


# -------------------------------------------------------------------------- bad inputs


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    _assert_dataerror(tmp_path / "empty.nii.gz", "empty (0 bytes)")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    _assert_dataerror(tmp_path / "notes.png", "not a valid PNG")


def test_truncated_nifti_gz(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "t.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    _assert_dataerror(path, "corrupt")


def test_truncated_nifti_uncompressed(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "t.nii", np.zeros((10, 10, 10), np.float32))
    path.write_bytes(path.read_bytes()[:1000])
    _assert_dataerror(path, "truncated")


def test_4d_nifti_refused_unless_channels(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 4, 3), np.float32))
    _assert_dataerror(path, "4D")
    assert read_image(path, channels=True).array.shape == (3, 4, 4, 4)


def test_nan_nifti(tmp_path, make_nifti):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    data[0, 0, 0] = np.inf
    _assert_dataerror(make_nifti(tmp_path / "nan.nii.gz", data), "2 NaN or infinite")


def test_nifti_header_claiming_huge_size(tmp_path, make_nifti):
    path = make_nifti(tmp_path / "huge.nii", np.zeros((2, 2, 2), np.float32))
    blob = bytearray(path.read_bytes())
    struct.pack_into("<8h", blob, 40, 3, 30000, 30000, 30000, 1, 1, 1, 1)
    path.write_bytes(bytes(blob))
    _assert_dataerror(path, "header claims")
    gz = tmp_path / "huge.nii.gz"
    gz.write_bytes(gzip.compress(bytes(blob)))
    _assert_dataerror(gz, "header claims")


def test_dicom_without_pixel_data(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    _assert_dataerror(path, "no pixel data")


def test_dicom_header_claiming_huge_size(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "huge.dcm", np.zeros((2, 2), np.uint16), rows_cols=(60000, 60000), frames=500)
    _assert_dataerror(path, "header claims")


def test_png_header_claiming_huge_size(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "h.png")
    blob = bytearray((tmp_path / "h.png").read_bytes())
    struct.pack_into(">II", blob, 16, 100000, 100000)  # IHDR width and height
    struct.pack_into(">I", blob, 29, zlib.crc32(bytes(blob[12:29])))  # valid chunk CRC
    (tmp_path / "h.png").write_bytes(bytes(blob))
    _assert_dataerror(tmp_path / "h.png", "absurd image size")


def test_missing_unknown_and_folder_without_images(tmp_path):
    _assert_dataerror(tmp_path / "nope.nii.gz", "no such file")
    (tmp_path / "x.xyz").write_text("hello")
    _assert_dataerror(tmp_path / "x.xyz", "unsupported file type")
    (tmp_path / "empty_dir").mkdir()
    _assert_dataerror(tmp_path / "empty_dir", "no DICOM series")


# ------------------------------------------------------------ colour, vectors, 2D NIfTI


def _palette_png(path, indices: np.ndarray, palette: list[int]) -> None:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(path)


VOC = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # black, dark red, dark green, olive


def test_palette_png_label_keeps_its_indices_and_image_is_not_greyed(tmp_path):
    indices = np.zeros((5, 7), np.uint8)
    indices[1:3, 2:6], indices[3, :3], indices[4, 6] = 1, 3, 2
    _palette_png(tmp_path / "lab.png", indices, VOC)
    assert Image.open(tmp_path / "lab.png").mode == "P"
    np.testing.assert_array_equal(read_image(tmp_path / "lab.png", label=True).array[0], indices)
    with pytest.raises(DataError, match=r"lab\.png: is a colour image \(mode P\) whose 3 samples"):
        read_image(tmp_path / "lab.png")  # as an image the colours differ: refused, not 0.299 R + ...
    grey = [v for i in range(4) for v in (i * 60,) * 3]  # a palette of greys: the grey values
    _palette_png(tmp_path / "grey.png", indices, grey)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png").array[0], indices * 60.0)


def test_grey_stored_as_rgb_or_with_opaque_alpha_is_its_grey(tmp_path):
    grey = (np.arange(20, dtype=np.uint8).reshape(4, 5) * 13).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), mode="LA").save(tmp_path / "la.png")
    for name in ("rgb.png", "la.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array[0], grey)
    alpha = np.stack([grey, (np.arange(20).reshape(4, 5) * 7).astype(np.uint8)], -1)
    Image.fromarray(alpha, mode="LA").save(tmp_path / "see-through.png")
    with pytest.raises(DataError, match="see-through.png: .*varying transparency channel"):
        read_image(tmp_path / "see-through.png")


def test_vector_mhd_refused_unless_channels(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.random((4, 5, 6, 4)).astype(np.float32)  # (z, y, x, component)
    sitk.WriteImage(sitk.GetImageFromArray(values, isVector=True), str(tmp_path / "prob.mhd"))
    with pytest.raises(DataError, match=r"prob\.mhd: is a vector image whose 4 samples per pixel differ.*in_channels"):
        read_image(tmp_path / "prob.mhd")
    record = read_image(tmp_path / "prob.mhd", channels=True)
    assert record.array.shape == (4, 6, 5, 4)
    # RAS canonical of an identity-direction ITK image: x and y reversed, component c -> channel c
    np.testing.assert_array_equal(record.array[2, 0, 0, 1], values[1, -1, -1, 2])


def test_true_2d_nifti_is_a_one_slice_volume_and_planar(tmp_path):
    from cover.data.record import as_planar

    values = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    nib.save(nib.Nifti1Image(values, np.diag([0.5, 2.0, 3.0, 1.0])), str(tmp_path / "flat.nii.gz"))
    record = read_image(tmp_path / "flat.nii.gz")
    assert record.array.shape == (1, 5, 7, 1) and record.meta["original_shape"] == [5, 7]
    planar = as_planar(record)
    assert planar.array.shape == (1, 5, 7) and planar.spacing == (0.5, 2.0) and planar.affine is None
    np.testing.assert_array_equal(planar.array[0], values)
    assert planar.meta["plane_of_volume"]["axis"] == 2 and planar.meta["plane_of_volume"]["shape"] == [5, 7, 1]
    nib.save(nib.Nifti1Image(values[None], np.eye(4)), str(tmp_path / "sagittal.nii.gz"))  # (1, 5, 7)
    planar = as_planar(read_image(tmp_path / "sagittal.nii.gz"))
    assert planar.array.shape == (1, 5, 7) and planar.meta["plane_of_volume"]["axis"] == 0
    assert as_planar(read_image(make_volume(tmp_path / "thick.nii.gz"))) is None


def make_volume(path):
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 2), np.float32), np.eye(4)), str(path))
    return path
