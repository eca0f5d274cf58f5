"""Images stored as one file per channel: reading, the grid check, grouping nnU-Net channel files."""

import json

import nibabel as nib
import numpy as np
import pytest

from cover.data.channels import as_source, group_channel_files, output_path, read_source, source_text, source_value
from cover.data.discovery import load_datalist
from cover.errors import DataError

# Oblique, non-RAS: reading reorients to RAS, so the channels must be stacked after the same reorientation.
AFFINE = np.array([[-1.5, 0.1, 0.0, 40.0], [0.0, 0.0, 2.0, -12.0], [0.05, 1.2, 0.0, 7.5], [0.0, 0.0, 0.0, 1.0]])


def write(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def volumes(shape=(5, 6, 7), count=3, seed=0):
    """``count`` volumes with different random values (every swap or reorientation mistake shows)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(10.0 * c, 1.0 + c, shape).astype(np.float32) for c in range(count)]


def test_channel_files_are_stacked_in_the_given_order_on_channel_0s_grid(tmp_path):
    data = volumes()
    files = tuple(write(tmp_path / f"a_{c:04d}.nii.gz", d) for c, d in enumerate(data))
    record = read_source(files)
    singles = [nib.as_closest_canonical(nib.load(str(f))).get_fdata(dtype=np.float32) for f in files]
    assert record.array.shape == (3, *singles[0].shape)
    for channel, expected in enumerate(singles):  # oracle: nibabel's own reorientation of each file
        np.testing.assert_array_equal(record.array[channel], expected)
    first = read_source(files[0])
    np.testing.assert_array_equal(record.affine, first.affine)
    assert record.spacing == first.spacing and record.path == files[0]
    assert record.meta["channel_files"] == [str(f) for f in files]
    reverse = read_source(files[::-1])
    np.testing.assert_array_equal(reverse.array, record.array[::-1])


def test_a_4d_file_gives_its_4th_axis_as_channels(tmp_path):
    data = volumes()
    path = write(tmp_path / "brats.nii.gz", np.stack(data, axis=-1))
    record = read_source(path, channels=True)
    assert record.channels == 3
    for channel in range(3):
        expected = nib.as_closest_canonical(nib.Nifti1Image(data[channel], AFFINE)).get_fdata(dtype=np.float32)
        np.testing.assert_array_equal(record.array[channel], expected)
    with pytest.raises(DataError, match="brats.nii.gz: is a 4D image"):
        read_source(path)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (lambda d: (d[:, :, :6], AFFINE), "has shape 5x6x6 but channel 0 is 5x7x6"),
        (lambda d: (d, AFFINE @ np.diag([1.0, 1.0, 1.5, 1.0])), "has voxel size"),
        (lambda d: (d, AFFINE + np.pad(np.full((3, 1), 4.0), ((0, 1), (3, 0)))), "away from channel 0's"),
    ],
)
def test_a_channel_file_off_channel_0s_grid_is_a_one_line_error_naming_both_files(tmp_path, second, message):
    data = volumes(count=2)
    first = write(tmp_path / "a_0000.nii.gz", data[0])
    other = write(tmp_path / "a_0001.nii.gz", *second(data[1]))
    with pytest.raises(DataError, match=message) as error:
        read_source((first, other))
    text = str(error.value)
    assert "\n" not in text and text.startswith(str(other)) and f"channel 0: {first}" in text


def test_a_channel_file_with_several_channels_is_refused(tmp_path):
    data = volumes(count=2)
    first = write(tmp_path / "a_0000.nii.gz", data[0])
    four_d = write(tmp_path / "a_0001.nii.gz", np.stack(data, axis=-1))
    with pytest.raises(DataError, match="a_0001.nii.gz: is a 4D image"):
        read_source((first, four_d))


def test_grouping_nnunet_channel_files_by_case(tmp_path):
    names = ["b_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "a_0001.nii.gz", "brats.nii.gz"]
    paths = sorted(tmp_path / n for n in names)
    grouped = group_channel_files(paths, 2)
    assert [source_value(s) for s in grouped] == [
        [str(tmp_path / "a_0000.nii.gz"), str(tmp_path / "a_0001.nii.gz")],
        [str(tmp_path / "b_0000.nii.gz"), str(tmp_path / "b_0001.nii.gz")],
        str(tmp_path / "brats.nii.gz"),  # not CASE_XXXX: a (4D) file of its own
    ]
    assert [output_path(s).name for s in grouped] == ["a.nii.gz", "b.nii.gz", "brats.nii.gz"]
    assert group_channel_files(paths, 1) == paths  # one channel: slice_0001.png is an image of its own
    with pytest.raises(DataError, match="case a lacks a_0002.nii.gz") as error:
        group_channel_files(paths, 3)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="case c has c_0002.nii.gz beyond"):
        group_channel_files([tmp_path / f"c_000{i}.nii.gz" for i in range(3)], 2)


def test_datalist_image_lists_are_channel_files(tmp_path):
    datalist = {
        "training": [{"image": ["t1/a.nii.gz", "t2/a.nii.gz"], "label": "seg/a.nii.gz"}],
        "test": [{"image": ["t1/b.nii.gz"]}],
    }
    (tmp_path / "list.json").write_text(json.dumps(datalist))
    entries = load_datalist(tmp_path / "list.json")
    assert entries[0]["image"] == (tmp_path / "t1" / "a.nii.gz", tmp_path / "t2" / "a.nii.gz")
    assert entries[1]["image"] == tmp_path / "t1" / "b.nii.gz"  # a one-file list is that file
    assert source_text(entries[0]["image"]) == f"{tmp_path / 't1' / 'a.nii.gz'} + {tmp_path / 't2' / 'a.nii.gz'}"
    assert as_source(["x", "y"]) == (tmp_path.__class__("x"), tmp_path.__class__("y"))
    (tmp_path / "bad.json").write_text(json.dumps([{"image": ["a.nii.gz", 3]}]))
    with pytest.raises(DataError, match="'image' must be one path string or a list of channel files"):
        load_datalist(tmp_path / "bad.json")
