"""cases.png / overlay.png orientation: volumes shown radiologically, checked on the pictures' arrays."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from cover.data.readers import read_image
from cover.downstream.figures import is_ras, plot_cases, screen_view
from cover.registration.pipeline import _display, _display_field

SHAPE = (12, 10, 6)  # x (towards patient Right), y (Anterior), z (Superior)


def _volume() -> np.ndarray:
    """Grey volume with a black block at the patient's right-anterior and a white one at left-posterior."""
    values = np.full(SHAPE, 0.5, dtype=np.float32)
    values[8:, 7:, :] = 0.0  # right (high x) and anterior (high y)
    values[:3, :2, :] = 1.0  # left (low x) and posterior (low y)
    return values


def test_screen_view_puts_right_anterior_top_left():
    picture = screen_view(_volume()[..., 3])
    assert picture.shape == (10, 12)  # rows = anterior..posterior, columns = right..left
    assert (picture[:3, :4] == 0.0).all() and (picture[-2:, -3:] == 1.0).all()
    assert (picture[3:, :] != 0.0).all() and (picture[:, 4:] != 0.0).all()
    # coronal (x, z): superior at the top, right on the left
    coronal = np.zeros((4, 3))
    coronal[3, 2] = 1  # most right, most superior
    assert screen_view(coronal)[0, 0] == 1


def _black_centre_in_grey_panel(png, left: int, right: int) -> tuple[float, float]:
    """Centre of the black pixels inside the grey image panel between columns ``left`` and ``right``."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)[:, left:right]
    grey = (np.abs(rgb - rgb[..., :1]).max(-1) < 3) & (np.abs(rgb[..., 0] - 128) < 12)
    rows, cols = np.nonzero(grey)
    top, bottom, first, last = rows.min(), rows.max(), cols.min(), cols.max()
    panel = rgb[top : bottom + 1, first : last + 1]
    black_rows, black_cols = np.nonzero(panel.max(-1) < 30)
    assert black_rows.size > 0
    return black_rows.mean() / panel.shape[0], black_cols.mean() / panel.shape[1]


def test_cases_png_shows_a_volume_read_from_lps_nrrd_radiologically(tmp_path):
    """An NRRD stored in LPS order (x and y reversed): the picture still has right-anterior top-left."""
    lps = _volume()[::-1, ::-1, :]
    image = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(2, 1, 0)))
    sitk.WriteImage(image, str(tmp_path / "v.nrrd"))
    record = read_image(tmp_path / "v.nrrd")
    assert is_ras(record)
    label = np.zeros(SHAPE, dtype=np.int64)
    label[4:6, 4:6, 2] = 1
    plot_cases([("v", record.array, label, label)], 2, tmp_path / "cases.png", ras=[is_ras(record)])
    row, col = _black_centre_in_grey_panel(tmp_path / "cases.png", 0, 300)
    assert row < 0.35 and col < 0.4, (row, col)


def test_plain_images_stay_as_stored(tmp_path):
    plane = np.full((10, 12), 0.5, dtype=np.float32)
    plane[-3:, -4:] = 0.0  # bottom-right as stored
    plane[:2, :2] = 1.0
    Image.fromarray((plane * 255).astype(np.uint8)).save(tmp_path / "p.png")
    record = read_image(tmp_path / "p.png")
    assert not is_ras(record)
    empty = np.zeros((10, 12), dtype=np.int64)
    plot_cases([("p", record.array, empty, empty)], 2, tmp_path / "cases.png", ras=[is_ras(record)])
    row, col = _black_centre_in_grey_panel(tmp_path / "cases.png", 0, 300)
    assert row > 0.65 and col > 0.6, (row, col)


def test_registration_overlay_orientation_and_field_directions():
    volume = _volume()
    picture = _display(volume, ras=True)
    assert (picture[:3, :4] == 0.0).all()
    np.testing.assert_array_equal(_display(volume[..., 0]), volume[..., 0])  # plain 2D: as stored
    field = np.zeros((3, *SHAPE), dtype=np.float32)
    field[0] = 2.0  # towards patient Right: on screen, to the left (columns decrease)
    field[1] = 1.0  # towards Anterior: on screen, up (rows decrease)
    rows, cols = _display_field(field, ras=True)
    assert rows.shape == (10, 12) and (rows == -1.0).all() and (cols == -2.0).all()


def test_nifti_with_identity_affine_is_ras(tmp_path):
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), str(tmp_path / "v.nii.gz"))
    assert is_ras(read_image(tmp_path / "v.nii.gz"))
    np.save(tmp_path / "v.npy", _volume())
    assert not is_ras(read_image(tmp_path / "v.npy"))
