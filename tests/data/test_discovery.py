"""What a folder scan takes as pretraining images, and what it leaves out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cover.data.discovery import find_unlabeled_images, not_an_image


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("case1.png", None),
        ("segment_3.png", None),  # "segment" is not the token "seg"
        ("labelled_scan.png", None),
        ("imagesTr/la_003_0000.png", None),
        ("case1_seg.png", "label map by name"),
        ("case1-mask.png", "label map by name"),
        ("mask_001.png", "label map by name"),
        ("brain.label.png", "label map by name"),
        ("case1_gt.png", "label map by name"),
        ("labelsTr/la_003.png", "label map by folder"),
        ("sub/Masks/c.png", "label map by folder"),
        ("features.npy", "NumPy array"),
        ("volume.npz", "NumPy array"),
    ],
)
def test_not_an_image_rule(tmp_path, name, reason):
    assert not_an_image(tmp_path / name, tmp_path) == reason


def test_find_unlabeled_images_leaves_out_arrays_and_labels(tmp_path):
    kept = [_png(tmp_path / "a.png"), _png(tmp_path / "sub" / "b.png")]
    _png(tmp_path / "a_seg.png")
    _png(tmp_path / "labels" / "a.png")
    np.save(tmp_path / "emb.npy", np.zeros((4, 4)))
    images, left_out = find_unlabeled_images(tmp_path)
    assert images == kept
    assert sorted((p.relative_to(tmp_path).as_posix(), r) for p, r in left_out) == [
        ("a_seg.png", "label map by name"),
        ("emb.npy", "NumPy array"),
        ("labels/a.png", "label map by folder"),
    ]
    # named explicitly, a NumPy file or a label-named file is used
    assert find_unlabeled_images(tmp_path / "emb.npy") == ([tmp_path / "emb.npy"], [])
