"""The built-in labeled task: 4-class tissue labelling of MNI152 axial slices (docs/method.md §13).

What ``cover finetune`` and ``cover evaluate`` use without data, the benchmark's ``mni-tissue-2d``
and the images ``cover analyze`` measures by default.

:func:`write_demo_task` writes the slices and their labels as PNG files, so the demo runs
through exactly the same code as user data (folder pair, data-layer readers, presets):

- ``train/images``, ``train/labels``: the 8 slices of :data:`~cover.data.demo.template.FINETUNE_SLAB`
  (z = 70 … 77);
- ``test/images``, ``test/labels``: the 10 slices of :data:`~cover.data.demo.template.TEST_SLAB`
  (z = 100 … 109), 22 slices away and excluded from demo pretraining.

Slices are cut, padded to square and resized exactly like the demo pretraining slices
(:func:`~cover.data.demo.template.axial_slices`, 233 px -> ``size``); images are the template scaled
to [0, 1] and stored as 8-bit PNG; labels (0 background, 1 CSF, 2 GM, 3 WM, from
:func:`~cover.data.demo.template.mni_tissue_labels`) are resized as one-hot maps and arg-maxed.
One template gives no subject variability: the task shows that the pipeline works and what
pretraining changes, not clinical performance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cover.data.demo.template import (
    FINETUNE_SLAB,
    TEST_SLAB,
    TISSUE_NAMES,
    axial_slices,
    load_mni,
    mni_tissue_labels,
)

DEMO_SIZE = 96


def demo_slices(z_values: list[int] | range, size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Demo images and labels of some axial slices.

    Args:
        z_values: Axial slice indices of the 1 mm template.
        size: Output side in pixels.

    Returns:
        ``(images, labels)``: uint8 ``(N, size, size)`` and uint8 ``(N, size, size)``.
    """
    images = axial_slices(load_mni("t1"), z_values, (size, size))[:, 0]
    labels = mni_tissue_labels()
    onehot = np.stack([(labels == k).astype(np.float32) for k in range(len(TISSUE_NAMES))], axis=-1)
    resized = [axial_slices(onehot[..., k], z_values, (size, size))[:, 0] for k in range(len(TISSUE_NAMES))]
    label_maps = torch.stack(resized).argmax(dim=0)
    pixels = np.rint(np.clip(images.numpy(), 0.0, 1.0) * 255).astype(np.uint8)
    return pixels, label_maps.numpy().astype(np.uint8)


def demo_task_paths(folder: str | Path) -> dict[str, str]:
    """Where :func:`write_demo_task` puts the demo's folders (nothing is written).

    Args:
        folder: The demo folder.

    Returns:
        Folder paths by role: ``images``, ``labels``, ``test_images``, ``test_labels``.
    """
    root = Path(folder)
    return {
        prefix + role: str(root / split / role)
        for split, prefix in (("train", ""), ("test", "test_"))
        for role in ("images", "labels")
    }


def write_demo_task(folder: str | Path, size: int = DEMO_SIZE) -> dict[str, str]:
    """Write the demo's training and test slices with labels as PNG files.

    Args:
        folder: Destination (created).
        size: Slice side in pixels.

    Returns:
        Folder paths by role: ``images``, ``labels``, ``test_images``, ``test_labels``.
    """
    paths = demo_task_paths(folder)
    for split, slab in (("train", FINETUNE_SLAB), ("test", TEST_SLAB)):
        z_values = range(*slab)
        images, labels = demo_slices(z_values, size)
        prefix = "" if split == "train" else "test_"
        for role, stack in (("images", images), ("labels", labels)):
            target = Path(paths[prefix + role])
            target.mkdir(parents=True, exist_ok=True)
            for z, picture in zip(z_values, stack, strict=True):
                Image.fromarray(picture).save(target / f"mni_z{z:03d}.png")
    return paths
