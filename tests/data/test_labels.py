"""Label maps: integer class indices on exactly their image's grid, or a one-line refusal naming both files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from cover.data.labels import check_label_values, count_classes, original_values, read_label_map
from cover.data.readers import read_image
from cover.data.record import as_planar
from cover.errors import ConfigError, DataError

AFFINE = np.array([[0.0, 0.0, 2.0, -30.0], [-1.5, 0.0, 0.0, 40.0], [0.0, 1.0, 0.0, -12.5], [0, 0, 0, 1]])


def _classes(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=shape).astype(np.uint8)


def _nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.fixture
def image(tmp_path):
    values = np.random.default_rng(1).normal(size=(6, 7, 5)).astype(np.float32)
    return read_image(_nifti(tmp_path / "img.nii.gz", values))


def test_label_on_the_same_grid_in_another_voxel_order_is_read(tmp_path, image):
    labels = _classes((6, 7, 5))
    same = read_label_map(_nifti(tmp_path / "lab.nii.gz", labels), image)
    # the same world grid stored flipped along the first axis (affine adjusted): same RAS labels
    flipped = AFFINE.copy()
    flipped[:3, 0] *= -1
    flipped[:3, 3] = AFFINE[:3, :3] @ [5, 0, 0] + AFFINE[:3, 3]
    other = read_label_map(_nifti(tmp_path / "flip.nii.gz", labels[::-1], flipped), image)
    np.testing.assert_array_equal(same, other)
    # oracle: the RAS canonical array of the label file, read by nibabel itself
    expected = np.asarray(nib.as_closest_canonical(nib.load(str(tmp_path / "lab.nii.gz"))).dataobj)
    np.testing.assert_array_equal(same, expected)
    assert same.dtype == np.int64


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("origin", "has its origin 10 mm away from its image's"),
        ("spacing", "has voxel size [2.5, 1.5, 1.0] mm but its image has [2.0, 1.5, 1.0] mm"),
        ("direction", "has other axis directions than its image"),
        ("shape", "has shape 4x6x7 but its image is 5x6x7"),  # RAS order: file axes 2, 0, 1
    ],
)
def test_label_on_another_grid_is_refused_naming_both_files(tmp_path, image, change, words):
    labels, affine = _classes((6, 7, 5)), AFFINE.copy()
    if change == "origin":
        affine[:3, 3] += [0.0, 10.0, 0.0]
    elif change == "spacing":
        affine[:3, 2] *= 1.25
    elif change == "direction":  # turned by 10 degrees about S: same shape, same closest orientation
        turn = np.deg2rad(10.0)
        rotation = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
        affine[:3, :3] = rotation @ AFFINE[:3, :3]
    else:
        labels = _classes((6, 7, 4))
    path = _nifti(tmp_path / f"{change}.nii.gz", labels, affine)
    with pytest.raises(DataError) as error:
        read_label_map(path, image)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and f"(label map of {image.path})" in message
    assert words in message, message
    assert "\n" not in message


def test_a_hundredth_of_a_voxel_is_tolerated(tmp_path, image):
    affine = AFFINE.copy()
    affine[:3, 3] += 0.004  # float rounding of headers written by other tools
    assert read_label_map(_nifti(tmp_path / "near.nii.gz", _classes((6, 7, 5)), affine), image).shape == (5, 6, 7)


def test_fractional_label_is_refused(tmp_path, image):
    values = _classes((6, 7, 5)).astype(np.float32)
    values[0, :3, 0] = [0.25, 1.5, 2.75]
    path = _nifti(tmp_path / "soft.nii.gz", values)
    with pytest.raises(DataError, match=r"soft\.nii\.gz: holds 3 non-integer value\(s\) .*label map of .*img\.nii\.gz"):
        read_label_map(path, image)


def test_palette_and_colour_png_labels(tmp_path):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6) * 8).save(tmp_path / "photo.png")
    photo = read_image(tmp_path / "photo.png")
    indices = np.zeros((5, 6), np.uint8)
    indices[1:4, 1:3], indices[0, 5] = 3, 1
    palette = Image.fromarray(indices, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * 756)
    palette.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "voc.png", photo), indices)
    palette.convert("RGB").save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png: is a colour label map .*label map of .*photo\.png"):
        read_label_map(tmp_path / "rgb.png", photo)
    Image.fromarray(np.stack([indices] * 3, -1)).save(tmp_path / "grey_rgb.png")  # equal samples: fine
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_rgb.png", photo), indices)


def test_label_of_a_one_slice_volume_takes_the_same_slice(tmp_path):
    values = np.random.default_rng(2).normal(size=(6, 7, 1)).astype(np.float32)
    planar = as_planar(read_image(_nifti(tmp_path / "slice.nii.gz", values)))
    labels = _classes((6, 7, 1))
    got = read_label_map(_nifti(tmp_path / "slice_seg.nii.gz", labels), planar)
    expected = np.asarray(nib.as_closest_canonical(nib.load(str(tmp_path / "slice_seg.nii.gz"))).dataobj)
    assert got.shape == planar.spatial_shape
    np.testing.assert_array_equal(got, np.squeeze(expected, axis=int(planar.meta["plane_of_volume"]["axis"])))
    moved = AFFINE.copy()
    moved[:3, 3] += 5.0
    with pytest.raises(DataError, match="origin .* away"):
        read_label_map(_nifti(tmp_path / "moved.nii.gz", labels, moved), planar)


def test_nrrd_label_with_shifted_origin(tmp_path):
    values = np.random.default_rng(4).normal(size=(4, 5, 6)).astype(np.float32)
    image = sitk.GetImageFromArray(values)
    image.SetOrigin((25.74, -125.76, -320.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    label = sitk.GetImageFromArray(_classes((4, 5, 6)))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(tmp_path / "ok.nrrd"))
    record = read_image(tmp_path / "ct.nrrd")
    assert read_label_map(tmp_path / "ok.nrrd", record).shape == (6, 5, 4)  # (x, y, z)
    label.SetOrigin((35.74, -125.76, -320.0))
    sitk.WriteImage(label, str(tmp_path / "off.nrrd"))
    with pytest.raises(DataError, match=r"off\.nrrd: has its origin 10 mm away .*label map of .*ct\.nrrd"):
        read_label_map(tmp_path / "off.nrrd", record)


def test_jpeg_label_is_refused_naming_both_files(tmp_path):
    indices = np.kron(np.arange(6, dtype=np.uint8).reshape(2, 3), np.ones((8, 8), np.uint8))
    Image.fromarray(indices * 40).save(tmp_path / "photo.png")
    photo = read_image(tmp_path / "photo.png")
    Image.fromarray(indices).save(tmp_path / "mask.jpg", quality=100)
    with pytest.raises(DataError, match=r"mask\.jpg: is a JPEG \(label map of .*photo\.png\); .* save it as PNG"):
        read_label_map(tmp_path / "mask.jpg", photo)
    with pytest.raises(DataError, match=r"mask\.jpg: is a JPEG; .*lossless"):  # counting classes, no image
        read_label_map(tmp_path / "mask.jpg", None)


def _blocks(side: int, values: np.ndarray) -> np.ndarray:
    """``values`` (k, k) as constant side x side blocks: a piecewise-constant map of k*k classes."""
    return np.kron(values, np.ones((side, side), values.dtype))


def test_up_to_256_classes_in_regions_are_read_and_more_are_refused(tmp_path):
    classes = _blocks(4, np.arange(256, dtype=np.int16).reshape(16, 16))  # 64x64, 256 values, 12% boundaries
    np.save(tmp_path / "many.npy", classes)
    np.testing.assert_array_equal(read_label_map(tmp_path / "many.npy", (64, 64)), classes)
    classes[0, 0] = 256  # a 257th value
    np.save(tmp_path / "too_many.npy", classes)
    with pytest.raises(DataError, match=r"too_many\.npy: holds 257 distinct values \(up to 256\), more than 256"):
        read_label_map(tmp_path / "too_many.npy", (64, 64))


def test_a_picture_or_noise_given_as_labels_is_refused(tmp_path, image):
    noise = np.random.default_rng(2).integers(0, 40, size=(6, 7, 5)).astype(np.int16)  # 40 values, most pairs differ
    path = _nifti(tmp_path / "ct.nii.gz", noise)
    with pytest.raises(
        DataError, match=r"ct\.nii\.gz: holds 40 distinct values and 9\d% of neighbouring pixels differ"
    ):
        read_label_map(path, image)
    stripes = _blocks(1, np.arange(17, dtype=np.uint8).reshape(1, 17).repeat(17, axis=0))  # 17 values, half differ
    np.save(tmp_path / "stripes.npy", stripes)
    np.testing.assert_array_equal(read_label_map(tmp_path / "stripes.npy", (17, 17)), stripes)
    few = np.random.default_rng(3).integers(0, 16, size=(6, 7, 5)).astype(np.int16)  # 16 values: any arrangement
    read = read_label_map(_nifti(tmp_path / "few.nii.gz", few), image)  # RAS order: compare the counts
    np.testing.assert_array_equal(np.bincount(read.ravel()), np.bincount(few.ravel()))


# ------------------------------------------------------------------ label values (issue 24)


def test_count_classes_needs_the_indices_0_to_k_minus_1_unless_declared():
    found = [("a.png", np.array([0, 1])), ("b.png", np.array([0, 2]))]
    assert count_classes(found, None, "") == 3
    assert count_classes([("a.png", np.array([0]))], None, "") == 2  # background only: still two classes
    assert count_classes([("a.png", np.array([0, 2]))], 4, "num_classes is 4") == 4  # classes 1, 3 absent: declared
    with pytest.raises(DataError) as error:
        count_classes([("a.png", np.array([0, 1])), ("b.png", np.array([0, 1, 7]))], None, "")
    assert str(error.value) == (
        "b.png: holds values 0, 1, 7 but the label maps hold values 0, 1, 7 together; label values must be the "
        "class indices 0..K-1: pass --label-values 0,1,7 (label_values in a YAML file) to make value i of the list "
        "class i"
    )
    with pytest.raises(DataError, match=r"^b.png: holds values 0, 255 but num_classes is 2; .*--label-values 0,255 "):
        count_classes([("a.png", np.array([0])), ("b.png", np.array([0, 255]))], 2, "num_classes is 2")
    with pytest.raises(DataError, match=r"^a.png: holds value 9 but num_classes is 3; .* 0..K-1 \(0..2 here\)$"):
        count_classes([("a.png", np.array([9]))], 3, "num_classes is 3")


def test_label_values_map_each_listed_value_to_its_position_and_back(tmp_path):
    masks = np.zeros((6, 9), np.uint8)
    masks[1:3, 2:7], masks[4, 8] = 255, 127  # listed as 0, 255, 127: classes by list order, not value order
    path = tmp_path / "m.png"
    Image.fromarray(masks).save(path)
    classes = read_label_map(path, (6, 9), (0, 255, 127))
    expected = np.select([masks == 255, masks == 127], [1, 2], 0)  # 255 listed second: class 1
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(original_values(classes, 3, (0, 255, 127)), masks)
    assert original_values(classes, 3, None).dtype == np.uint8
    wide = original_values(np.array([[0, 1]]), 2, (0, 1000))
    assert wide.dtype == np.uint16 and wide.tolist() == [[0, 1000]]
    with pytest.raises(DataError, match=r"m.png: holds value 127, which label_values \[0, 255\] does not list"):
        read_label_map(path, (6, 9), (0, 255))


@pytest.mark.parametrize(
    ("values", "words"),
    [([1], "needs at least two values"), ([0, -1], "holds a negative value"), ([0, 5, 5], "repeats a value")],
)
def test_bad_label_values_are_one_line(values, words):
    with pytest.raises(ConfigError, match=rf"^label_values: \[.*\] {words}"):
        check_label_values(values)
    assert check_label_values(None) is None and check_label_values(["0", 255.0]) == (0, 255)
