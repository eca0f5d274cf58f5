"""cover predict: every mask on exactly its input's grid, one mask per input, bad files per --on-bad-file.

Most tests replace the network by a voxel-wise stub (class = how many of 100, 200 the raw value
exceeds; preset ``none``), so the expected mask of every input is computed from the file's own
array read with the format's own library. One test runs ``cover predict`` end to end on a real
(untrained) checkpoint.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import tifffile
import torch
from PIL import Image
from torch import nn

import cover.downstream.predict as predict_module
from _support.cli import run_cli
from cover.downstream.predict import predict
from cover.errors import ConfigError, DataError
from cover.models.loading import build_network
from cover.models.networks import save_finetuned

TINY = {"channels": [8, 16, 32, 16, 8]}
OBLIQUE = np.array([[0.0, 0.98, 0.2, 30.0], [-0.7, 0.0, 0.0, -12.0], [0.0, -0.2, 2.4, 7.5], [0, 0, 0, 1]])


class ThresholdNet(nn.Module):
    """Voxel-wise 'segmentation': class 0, 1 or 2 as the value is <= 100, in (100, 200], > 200."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x > 100).long() + (x > 200).long()
        return torch.nn.functional.one_hot(k[:, 0], 3).movedim(-1, 1).float() * 10


def classes(values: np.ndarray) -> np.ndarray:
    """The stub's answer computed on a file's own array."""
    return ((values > 100).astype(np.uint8) + (values > 200)).astype(np.uint8)


def _values(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


@pytest.fixture
def stub(monkeypatch):
    """Install the stub network with a checkpoint of dimension ``dim``."""

    def install(dim: int) -> None:
        metadata = {
            "task": "seg",
            "num_classes": 3,
            "spatial_dims": dim,
            "in_channels": 1,
            "preset": "none",
            "patch_size": [16] * dim,
            "divisor": 16,
            "overlap": 0.25,
        }
        monkeypatch.setattr(predict_module, "load_finetuned", lambda *a, **k: (ThresholdNet(), metadata))

    return install


def _itk(path, values_zyx, direction, spacing=(0.8, 1.1, 2.5), origin=(25.74, -125.76, -320.0)):
    image = sitk.GetImageFromArray(values_zyx)
    image.SetSpacing(spacing[: values_zyx.ndim])
    image.SetOrigin(origin[: values_zyx.ndim])
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    sitk.WriteImage(image, str(path))
    return image


def test_3d_masks_lie_on_each_inputs_grid(stub, tmp_path):
    stub(3)
    folder = tmp_path / "in"
    folder.mkdir()
    nifti = _values((9, 7, 5), 1)
    nib.save(nib.Nifti1Image(nifti, OBLIQUE), str(folder / "oblique.nii.gz"))
    permuted = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)
    sources = {
        "lung2crop.nrrd": _itk(folder / "lung2crop.nrrd", _values((5, 6, 7), 2), np.eye(3)),
        "permuted.mha": _itk(folder / "permuted.mha", _values((4, 6, 9), 3), permuted),
        "flipped.mhd": _itk(folder / "flipped.mhd", _values((6, 5, 4), 4), np.diag([-1.0, 1.0, -1.0])),
    }
    summary = predict("ckpt.pt", folder, out=tmp_path / "pred")
    assert summary["num_predicted"] == 4 and summary["skipped"] == []
    mask = nib.load(str(tmp_path / "pred" / "oblique.nii.gz"))
    np.testing.assert_allclose(mask.affine, OBLIQUE, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), classes(nifti))
    for name, source in sources.items():
        out = sitk.ReadImage(str(tmp_path / "pred" / name))
        assert out.GetSize() == source.GetSize()
        np.testing.assert_allclose(out.GetOrigin(), source.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(out.GetDirection(), source.GetDirection(), atol=1e-9)
        np.testing.assert_allclose(out.GetSpacing(), source.GetSpacing(), atol=1e-9)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out), classes(sitk.GetArrayFromImage(source)))


def test_2d_masks_same_name_other_extension_are_two_files(stub, tmp_path):
    """z090.png and z090.jpg in one folder gave one mask listed twice; each input now has its own."""
    stub(2)
    folder = tmp_path / "in"
    folder.mkdir()
    png, jpg, tif = _values((6, 11), 5), _values((7, 9), 6), _values((5, 8), 7)
    Image.fromarray(png).save(folder / "z090.png")
    Image.fromarray(jpg).save(folder / "z090.jpg", quality=95)
    tifffile.imwrite(folder / "z090.tif", tif)
    _itk(folder / "plane.nrrd", _values((4, 10), 8), [[0.0, 1.0], [-1.0, 0.0]])
    summary = predict("ckpt.pt", folder, out=tmp_path / "pred")
    outputs = sorted(p.rsplit("/", 1)[1] for p in summary["outputs"])
    assert outputs == ["plane.nrrd", "z090.jpg.png", "z090.png", "z090.tif"]
    assert len({c["output"] for c in summary["cases"]}) == len(summary["cases"]) == summary["num_images"] == 4
    saved = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert {c["image"].rsplit("/", 1)[1]: c["output"].rsplit("/", 1)[1] for c in saved["cases"]} == {
        "plane.nrrd": "plane.nrrd",
        "z090.jpg": "z090.jpg.png",
        "z090.png": "z090.png",
        "z090.tif": "z090.tif",
    }
    pred = tmp_path / "pred"
    np.testing.assert_array_equal(np.asarray(Image.open(pred / "z090.png")), classes(png))
    decoded = np.asarray(Image.open(folder / "z090.jpg").convert("L"))
    np.testing.assert_array_equal(np.asarray(Image.open(pred / "z090.jpg.png")), classes(decoded))
    np.testing.assert_array_equal(tifffile.imread(pred / "z090.tif"), classes(tif))
    plane = sitk.ReadImage(str(pred / "plane.nrrd"))
    assert plane.GetDirection() == (0.0, 1.0, -1.0, 0.0) and plane.GetOrigin() == (25.74, -125.76)
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "plane.nrrd")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(plane), classes(source))


def test_dicom_series_gets_a_nifti_on_the_series_grid(stub, tmp_path):
    from data.conftest import write_dicom

    stub(3)
    series = tmp_path / "in" / "ct"
    slices = [_values((6, 5), 10 + k).astype(np.int16) for k in range(3)]
    for k, pixels in enumerate(slices):
        write_dicom(
            series / f"{k}.dcm",
            pixels,
            position=[1.0, 2.0, 3.0 + 2 * k],
            orientation=[0, 1, 0, -1, 0, 0],
            series_uid="1.2.826.0.1.3680043.8.498.5",
        )
    summary = predict("ckpt.pt", tmp_path / "in", out=tmp_path / "pred")
    assert [p.rsplit("/", 1)[1] for p in summary["outputs"]] == ["ct.nii.gz"]
    mask = nib.load(summary["outputs"][0])
    assert mask.shape == (5, 6, 3)  # (columns, rows, slices)
    for k, pixels in enumerate(slices):
        np.testing.assert_array_equal(np.asarray(mask.dataobj)[:, :, k], classes(pixels).T)
    # LPS: columns run along (0, 1, 0), rows along (-1, 0, 0), 0.5 mm pixels, slices 2 mm apart
    # along +z from (1, 2, 3); NIfTI holds the same in RAS.
    voxel_to_lps = np.array([[0, -0.5, 0, 1.0], [0.5, 0, 0, 2.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(mask.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ voxel_to_lps, atol=1e-6)


def test_single_dicom_file_gets_a_2d_nifti_of_its_pixel_array(stub, tmp_path):
    from data.conftest import write_dicom

    stub(2)
    pixels = _values((6, 9), 4).astype(np.int16)
    write_dicom(tmp_path / "in" / "xray.dcm", pixels, spacing=(0.4, 0.7))
    summary = predict("ckpt.pt", tmp_path / "in", out=tmp_path / "pred")
    assert [p.rsplit("/", 1)[1] for p in summary["outputs"]] == ["xray.dcm.nii.gz"]
    mask = nib.load(summary["outputs"][0])
    assert mask.shape == (6, 9)  # (rows, columns) of the DICOM pixel array
    np.testing.assert_array_equal(np.asarray(mask.dataobj), classes(pixels))
    np.testing.assert_allclose(mask.header.get_zooms(), (0.4, 0.7))


def test_2d_checkpoint_on_2d_nifti_and_one_slice_volumes(stub, tmp_path):
    """A true 2D NIfTI and one-slice NRRD/NIfTI volumes: each mask has its file's own shape and header."""
    stub(2)
    folder = tmp_path / "in"
    folder.mkdir()
    flat = _values((7, 9), 1)
    nib.save(nib.Nifti1Image(flat, OBLIQUE), str(folder / "flat.nii.gz"))
    thin = _values((7, 1, 9), 2)
    nib.save(nib.Nifti1Image(thin, OBLIQUE), str(folder / "thin.nii.gz"))
    source = _itk(folder / "slab.nrrd", _values((1, 6, 8), 3), np.diag([-1.0, 1.0, 1.0]))
    summary = predict("ckpt.pt", folder, out=tmp_path / "pred")
    assert summary["skipped"] == [] and summary["num_predicted"] == 3
    for name, values in (("flat.nii.gz", flat), ("thin.nii.gz", thin)):
        mask = nib.load(str(tmp_path / "pred" / name))
        assert mask.shape == values.shape
        np.testing.assert_array_equal(np.asarray(mask.dataobj), classes(values))
        np.testing.assert_allclose(mask.affine, OBLIQUE, atol=1e-6)
    out = sitk.ReadImage(str(tmp_path / "pred" / "slab.nrrd"))
    assert out.GetSize() == source.GetSize() and out.GetDirection() == source.GetDirection()
    np.testing.assert_allclose(out.GetOrigin(), source.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), classes(sitk.GetArrayFromImage(source)))


def _mixed_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_values((6, 7), 1)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    np.save(folder / "volume.npy", _values((4, 5, 6), 2))  # 3D: the 2D checkpoint cannot use it
    return folder


def test_bad_files_are_skipped_with_a_warning_and_listed(stub, tmp_path):
    stub(2)
    with pytest.warns(UserWarning) as caught:
        summary = predict("ckpt.pt", _mixed_folder(tmp_path), out=tmp_path / "pred")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert [s["image"].rsplit("/", 1)[1] for s in summary["skipped"]] == ["broken.png", "volume.npy"]
    assert summary["num_predicted"] == 1 and summary["num_images"] == 3
    volume = summary["skipped"][1]["error"]
    assert "but the checkpoint is a 2D model" in volume and "dim" not in volume.replace("dimension", ""), volume
    assert json.loads((tmp_path / "pred" / "summary.json").read_text())["skipped"] == summary["skipped"]


def test_on_bad_file_error_stops_with_one_line(stub, tmp_path, monkeypatch, capsys):
    stub(2)
    code, err = run_cli(
        [
            "predict",
            "ckpt.pt",
            "--images",
            _mixed_folder(tmp_path),
            "--out",
            tmp_path / "pred",
            "--on-bad-file",
            "error",
        ],
        monkeypatch,
        capsys,
    )
    errors = [line for line in err if not line.startswith("predict:")]  # progress bar lines aside
    assert code != 0 and len(errors) == 1 and errors[0].startswith("error: ") and "broken.png" in errors[0], err
    with pytest.raises(ConfigError, match="on_bad_file"):
        predict("ckpt.pt", tmp_path / "in", out=tmp_path / "p2", on_bad_file="stop")


def test_no_usable_input_is_an_error(stub, tmp_path):
    stub(3)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_values((6, 7))).save(folder / "flat.png")
    with pytest.warns(UserWarning, match="3D model"), pytest.raises(DataError, match="no image could be predicted"):
        predict("ckpt.pt", folder, out=tmp_path / "pred")


def test_cli_predict_end_to_end_keeps_each_files_voxel_order(tmp_path, monkeypatch, capsys):
    """One world image stored as RAS NIfTI and as LPS NRRD: the same mask, each in its file's order."""
    torch.manual_seed(0)
    spec = {"backbone": "unet", "backbone_args": TINY, "spatial_dims": 3, "in_channels": 1}
    network = build_network("seg", spec, 3)
    metadata = {**spec, "task": "seg", "num_classes": 3, "preset": "minmax", "patch_size": [16, 16, 16]}
    metadata.update(divisor=16, overlap=0.25)
    save_finetuned(tmp_path / "best.pt", network, metadata, {})
    values = np.random.default_rng(3).normal(size=(12, 10, 8)).astype(np.float32)  # (x, y, z) in RAS order
    values[3:8, 2:6, 1:4] += 3.0
    folder = tmp_path / "in"
    folder.mkdir()
    nib.save(nib.Nifti1Image(values, np.diag([0.9, 1.1, 2.0, 1.0])), str(folder / "a.nii.gz"))
    # The same image in LPS voxel order: x and y run the other way.
    lps = values[::-1, ::-1, :]
    image = sitk.GetImageFromArray(np.ascontiguousarray(lps.transpose(2, 1, 0)))
    image.SetSpacing((0.9, 1.1, 2.0))
    image.SetOrigin((-9.9, -9.9, 0.0))  # voxel (11, 9, 0) of the NIfTI: RAS (9.9, 9.9, 0)
    sitk.WriteImage(image, str(folder / "b.nrrd"))
    code, err = run_cli(
        ["predict", tmp_path / "best.pt", "--images", folder, "--out", tmp_path / "pred"], monkeypatch, capsys
    )
    assert code == 0, err
    a = np.asarray(nib.load(str(tmp_path / "pred" / "a.nii.gz")).dataobj)
    b = sitk.ReadImage(str(tmp_path / "pred" / "b.nrrd"))
    assert b.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0) and b.GetOrigin() == (-9.9, -9.9, 0.0)
    b_xyz = sitk.GetArrayFromImage(b).transpose(2, 1, 0)
    assert len(np.unique(a)) > 1 and not np.array_equal(a, a[::-1, ::-1, :])  # a flip would show
    np.testing.assert_array_equal(b_xyz, a[::-1, ::-1, :])
