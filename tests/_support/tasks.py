"""A tiny labeled 2D task on disk for the benchmark tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_blobs(root: Path, seed: int = 0) -> None:
    """Discs (label 1) with a core (label 2) on noise, 32 x 32 PNG: 3 training and 2 test cases.

    Writes ``root/{train,test}/{images,labels}/c{i}.png``.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", 3), ("test", 2)):
        for role in ("images", "labels"):
            (root / split / role).mkdir(parents=True)
        for i in range(count):
            yy, xx = np.indices((32, 32))
            cy, cx = rng.integers(10, 22, 2)
            radius = (yy - cy) ** 2 + (xx - cx) ** 2
            labels = np.where(radius < 9, 2, np.where(radius < 36, 1, 0)).astype(np.uint8)
            image = (labels * 80 + rng.integers(0, 30, (32, 32))).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"c{i}.png")
            Image.fromarray(labels).save(root / split / "labels" / f"c{i}.png")


def write_task(root: Path) -> dict:
    """3 training and 2 test cases, 32 x 32 PNG, labels 0..2; the task entry naming them."""
    write_blobs(root)
    return {
        "name": "blobs",
        "images": str(root / "train" / "images"),
        "labels": str(root / "train" / "labels"),
        "test_images": str(root / "test" / "images"),
        "test_labels": str(root / "test" / "labels"),
        "budgets": [1, 2],
        "class_names": ["background", "ring", "core"],
    }
