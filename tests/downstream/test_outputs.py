"""Where cover predict writes the mask of each input: one distinct path per input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cover.downstream.outputs import mask_path, mask_paths, output_suffix


def test_names_keep_the_input_name_and_never_clash(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (root / "ct").mkdir()
    names = ["z090.png", "z090.jpg", "z090.jpeg", "scan.nii", "scan.nii.gz", "sub/z090.png", "x.npz", "b.mgz"]
    for name in names:
        (root / name).write_bytes(b"x")
    images = [root / n for n in names] + [root / "ct"]
    found = [p.relative_to(out).as_posix() for p in mask_paths(images, root, out)]
    assert found == [
        "z090.png",
        "z090.jpg.png",
        "z090.jpeg.png",
        "scan.nii",
        "scan.nii.gz",
        "sub/z090.png",
        "x.npz.npy",
        "b.mgz.nii.gz",
        "ct.nii.gz",
    ]


def test_inputs_from_other_folders_or_differing_in_case_get_numbered(tmp_path):
    out = tmp_path / "out"
    a, b = tmp_path / "a" / "img.png", tmp_path / "b" / "img.png"
    upper = tmp_path / "b" / "IMG.png"
    for path in (a, b, upper):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    datalist_root = tmp_path / "lists"  # images outside it: named by file name only
    found = [p.name for p in mask_paths([a, b, upper], datalist_root, out)]
    assert found == ["img.png", "img-2.png", "IMG-3.png"]


def test_single_file_and_suffixes():
    image = Path("/data/scan.dcm")
    assert mask_path(image, "dicom", image, Path("/o")) == Path("/o/scan.dcm.nii.gz")
    assert output_suffix(Path("a.TIFF"), "tiff") == ".TIFF" and output_suffix(Path("a.mhd"), "mhd") == ".mhd"
    assert output_suffix(Path("IM0001"), "dicom") == ".nii.gz"
