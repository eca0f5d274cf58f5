"""Synthetic labeled tasks for the downstream tests: shapes of several classes on noisy backgrounds."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

TINY = {"channels": [8, 16, 32, 16, 8]}

# Oblique, non-RAS affine: predictions must come back in this exact geometry.
AFFINE = np.array(
    [
        [-1.5, 0.1, 0.0, 40.0],
        [0.0, 0.0, 2.0, -12.0],
        [0.05, 1.2, 0.0, 7.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def shapes_case(rng: np.random.Generator, dim: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """One image with a ball (class 1, bright) and a box (class 2, mid grey) on a noisy background.

    Returns:
        ``(image float32 (side,)*dim, labels uint8 (side,)*dim)``.
    """
    grid = np.stack(np.meshgrid(*[np.arange(side)] * dim, indexing="ij"), axis=0).astype(np.float32)
    labels = np.zeros((side,) * dim, dtype=np.uint8)
    radius = rng.uniform(0.17, 0.24) * side
    centre = rng.uniform(radius + 1, side - radius - 1, size=dim)
    labels[((grid - centre.reshape(-1, *[1] * dim)) ** 2).sum(0) <= radius**2] = 1
    half = rng.uniform(0.14, 0.2) * side
    for _ in range(20):  # a box that does not overlap the ball
        corner = rng.uniform(1, side - 2 * half - 1, size=dim)
        box = np.all((grid >= corner.reshape(-1, *[1] * dim)) & (grid < (corner + 2 * half).reshape(-1, *[1] * dim)), 0)
        if not (box & (labels > 0)).any():
            labels[box] = 2
            break
    image = 0.15 + 0.1 * rng.standard_normal(labels.shape)
    image[labels == 1] += 0.6
    image[labels == 2] += 0.3
    return image.astype(np.float32), labels


def write_seg_task(root: Path, dim: int, n: int, side: int, seed: int = 0) -> tuple[str, str]:
    """Write ``n`` cases: 2D as ``.npy`` images + ``.png`` labels, 3D as NIfTI with :data:`AFFINE`."""
    rng = np.random.default_rng(seed)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n):
        image, label = shapes_case(rng, dim, side)
        if dim == 2:
            np.save(images / f"case{i:02d}.npy", image)
            Image.fromarray(label).save(labels / f"case{i:02d}_seg.png")
        else:
            nib.save(nib.Nifti1Image(image, AFFINE), str(images / f"case{i:02d}.nii.gz"))
            nib.save(nib.Nifti1Image(label, AFFINE), str(labels / f"case{i:02d}.nii.gz"))
    return str(images), str(labels)


@pytest.fixture(scope="session")
def seg2d(tmp_path_factory):
    """A 2D three-class (background, ball, box) task: 24 cases of 32x32."""
    return write_seg_task(tmp_path_factory.mktemp("seg2d"), dim=2, n=24, side=32)


@pytest.fixture(scope="session")
def seg3d(tmp_path_factory):
    """A 3D three-class task: 12 NIfTI volumes of 16^3 with an oblique affine."""
    return write_seg_task(tmp_path_factory.mktemp("seg3d"), dim=3, n=12, side=16, seed=1)


def write_cls_task(root: Path, n: int, side: int = 32, seed: int = 0) -> str:
    """Two classes in sub-folders: ``empty`` (noise) and ``disc`` (noise + a bright disc), as PNG."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    for i in range(n):
        name = ("empty", "disc")[i % 2]
        image = 40 + 15 * rng.standard_normal((side, side))
        if name == "disc":
            centre = rng.uniform(side * 0.3, side * 0.7, size=2)
            image[((grid - centre.reshape(2, 1, 1)) ** 2).sum(0) <= (0.2 * side) ** 2] += 150
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"img{i:02d}.png")
    return str(root)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run the tests of each module on one intra-op thread.

    On this shared 2-core machine a loaded CPU makes two OpenMP threads spin against each other;
    one thread was measured 10-20x faster per training step under that load.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    """Small U-Net widths for fast CPU tests."""
    return dict(TINY)


@pytest.fixture(scope="session")
def seg_task():
    """Factory writing a synthetic segmentation task (see :func:`write_seg_task`)."""
    return write_seg_task


@pytest.fixture(scope="session")
def cls_task():
    """Factory writing a synthetic classification task (see :func:`write_cls_task`)."""
    return write_cls_task


@pytest.fixture(scope="session")
def oblique_affine():
    """The affine of the 3D synthetic volumes."""
    return AFFINE.copy()
