"""Downstream tasks of ``cover benchmark``: two built-in offline tasks and user tasks from folders.

Built-in tasks (docs/method.md §13; no labeled multi-subject set exists offline, so both come from the
one MNI152 template and show what pretraining changes, not clinical performance):

* ``mni-tissue-2d``: 4-class tissue labelling (0 background, 1 CSF, 2 GM, 3 WM) of axial
  slices, written by :func:`cover.downstream.demo.write_demo_task`: the 8 labeled slices of
  :data:`cover.data.demo.FINETUNE_SLAB` (z 70-77) to fine-tune on and the 10 slices of
  :data:`cover.data.demo.TEST_SLAB` (z 100-109) to test on, 22 slices apart; the demo
  pretraining never sees the test slab.
* ``mni-tissue-3d``: pseudo-subjects made from the template at 2 mm (the 3D demo
  pretraining's voxel size) and its tissue labels by :func:`pseudo_subject`: a random affine
  (rotation ±10° per axis, scale 0.9-1.1 per axis, translation ±3 voxels) composed with a
  smooth random elastic field (control points every 8 voxels, 2 voxels std), image warped
  linearly and labels with ``mode="nearest"``; then a smooth multiplicative bias field
  (``exp`` of a field with 0.15 std), a gamma contrast change (gamma 0.7-1.5) and Gaussian noise
  (std 0.01-0.04). Every subject is drawn from its own seed; training subjects use seeds
  ``(seed, 0, i)`` and test subjects ``(seed, 1, i)``, so the two sets are disjoint. The 3D
  demo pretraining samples patches of the same template, so this task measures adaptation to
  deformations and appearance, not generalisation to new anatomy.

A user task names folders (or datalists) of training and test cases; see :class:`TaskConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from cover.config import update_dataclass
from cover.errors import ConfigError

BUILTIN_TASKS = ("mni-tissue-2d", "mni-tissue-3d")
CLASS_NAMES = ("background", "CSF", "GM", "WM")


@dataclass
class TaskConfig:
    """One downstream task of the benchmark.

    Attributes:
        name: Task name; ``mni-tissue-2d`` and ``mni-tissue-3d`` are built in, any other name
            needs ``images``/``labels`` (or ``datalist``) and test data.
        dim: 2 or 3 (built-in tasks set it).
        images: Folder of training images (the labeled pool the budgets draw from).
        labels: Folder of their label maps (matched by file-name stem).
        datalist: JSON/CSV datalist with ``image`` and ``label`` instead of the two folders.
        test_images: Folder of test images.
        test_labels: Folder of their label maps.
        test_datalist: Test datalist instead of the two folders.
        budgets: Numbers of labeled training cases to fine-tune with.
        preset: Intensity preset of the images (``None``: the pretrained checkpoint's, else each
            file's default); built-in tasks use ``mri``.
        class_names: Optional names of labels 0, 1, ...
        size: Built-in 2D task: slice side in pixels.
        num_train: Built-in 3D task: training pseudo-subjects.
        num_test: Built-in 3D task: test pseudo-subjects.
        seed: Built-in 3D task: seed of the pseudo-subjects.
        finetune: Fine-tuning settings of this task (override the benchmark's ``finetune``).
    """

    name: str = "mni-tissue-2d"
    dim: int = 2
    images: str | None = None
    labels: str | None = None
    datalist: str | None = None
    test_images: str | None = None
    test_labels: str | None = None
    test_datalist: str | None = None
    budgets: tuple[int, ...] = (1, 2, 4, 8)
    preset: str | None = None
    class_names: tuple[str, ...] | None = None
    size: int = 96
    num_train: int = 8
    num_test: int = 4
    seed: int = 0
    finetune: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        """Whether this is one of the built-in MNI152 tasks."""
        return self.name in BUILTIN_TASKS


def resolve_task(values: dict[str, Any], index: int) -> TaskConfig:
    """Validate one task entry of the benchmark config.

    Args:
        values: The entry (a mapping of :class:`TaskConfig` keys).
        index: Its position in ``tasks`` (for messages).

    Returns:
        The task config, with the built-in tasks' dimension, preset and class names filled in.
    """
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"tasks[{index}]: expected a mapping with a 'name' (e.g. name: mni-tissue-2d)")
    task = update_dataclass(TaskConfig(), values, prefix=f"tasks[{index}].")
    if task.builtin:
        task = dataclasses.replace(
            task,
            dim=2 if task.name == "mni-tissue-2d" else 3,
            preset=task.preset or "mri",
            class_names=task.class_names or CLASS_NAMES,
        )
    else:
        if task.images is None and task.datalist is None:
            raise ConfigError(
                f"tasks[{index}] '{task.name}': not a built-in task ({', '.join(BUILTIN_TASKS)}); "
                "give images + labels or a datalist"
            )
        if task.test_images is None and task.test_datalist is None:
            raise ConfigError(f"tasks[{index}] '{task.name}': give test_images + test_labels or a test_datalist")
    if task.dim not in (2, 3):
        raise ConfigError(f"tasks[{index}].dim: {task.dim} is not allowed (allowed: 2, 3)")
    if not task.budgets or any(b < 1 for b in task.budgets):
        raise ConfigError(f"tasks[{index}].budgets: {list(task.budgets)} must be positive numbers of cases")
    if task.name == "mni-tissue-2d" and max(task.budgets) > 8:
        raise ConfigError(f"tasks[{index}].budgets: mni-tissue-2d has 8 labeled slices, got {list(task.budgets)}")
    if task.name == "mni-tissue-3d" and max(task.budgets) > task.num_train:
        raise ConfigError(
            f"tasks[{index}].budgets: {list(task.budgets)} exceed num_train={task.num_train} pseudo-subjects"
        )
    return task


def task_data(task: TaskConfig, root: Path) -> dict[str, str | None]:
    """Where a task's training and test cases are, writing the built-in tasks' files once.

    Args:
        task: The task.
        root: Folder for generated data (``OUT/data``).

    Returns:
        ``images``, ``labels``, ``datalist``, ``test_images``, ``test_labels``,
        ``test_datalist``.
    """
    if not task.builtin:
        keys = ("images", "labels", "datalist", "test_images", "test_labels", "test_datalist")
        return {k: getattr(task, k) for k in keys}
    folder = root / task.name
    marker = folder / "done.json"
    description = {"name": task.name, "size": task.size, "num_train": task.num_train, "num_test": task.num_test}
    description["seed"] = task.seed
    if not (marker.is_file() and json.loads(marker.read_text()).get("task") == description):
        if task.name == "mni-tissue-2d":
            from cover.downstream.demo import write_demo_task

            write_demo_task(folder, size=task.size)
        else:
            write_pseudo_subjects(folder, task.num_train, task.num_test, task.seed)
        marker.write_text(json.dumps({"task": description}))
    train, test = folder / "train", folder / "test"
    return {
        "images": str(train / "images"),
        "labels": str(train / "labels"),
        "datalist": None,
        "test_images": str(test / "images"),
        "test_labels": str(test / "labels"),
        "test_datalist": None,
    }


def template_2mm() -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 and tissue labels at 2 mm, cropped to the head.

    Returns:
        ``(image, labels)``: ``(1, 1, D, H, W)`` float in [0, 1] and ``(1, 1, D, H, W)`` float
        labels 0-3 (array axes of the RAS volume).
    """
    from cover.data.demo import demo_volume_2mm, mni_tissue_labels

    image = demo_volume_2mm()[None]  # (1, 1, 99, 117, 95)
    labels = torch.from_numpy(mni_tissue_labels())
    onehot = torch.stack([(labels == k).float() for k in range(len(CLASS_NAMES))])[None]
    small = F.interpolate(onehot, size=tuple(image.shape[2:]), mode="trilinear", align_corners=False)
    label_map = small.argmax(dim=1, keepdim=True).float()
    head = np.argwhere(image[0, 0].numpy() > 0.05)
    low = np.maximum(head.min(axis=0) - 2, 0)
    high = np.minimum(head.max(axis=0) + 3, image.shape[2:])
    crop = (slice(None), slice(None)) + tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    return image[crop].contiguous(), label_map[crop].contiguous()


def pseudo_subject(
    image: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pseudo-subject: a smooth random deformation and appearance change of the template.

    Args:
        image: ``(1, 1, *S)`` template in [0, 1].
        labels: ``(1, 1, *S)`` float labels.
        generator: Seeded generator (CPU).

    Returns:
        ``(image, labels)`` of the same shapes; labels warped with nearest-neighbour sampling.
    """
    from cover.geometry import affine_field, random_affine_matrices, random_elastic_field, warp

    spatial = tuple(image.shape[2:])
    matrix = random_affine_matrices(
        1, 3, rotation_deg=10.0, num_rotations=1, scale_range=(0.9, 1.1), shear_deg=0.0, generator=generator
    )
    translation = (torch.rand(1, 3, generator=generator) * 2 - 1) * 3.0
    phi = affine_field(matrix, translation, spatial)
    phi = phi + random_elastic_field(1, spatial, magnitude=2.0, control_spacing=8, generator=generator)
    warped = warp(image, phi)
    warped_labels = warp(labels, phi, mode="nearest")
    bias = random_elastic_field(1, spatial, magnitude=0.15, control_spacing=max(spatial) // 2, generator=generator)
    gamma = 0.7 + 0.8 * torch.rand((), generator=generator)
    noise_std = 0.01 + 0.03 * torch.rand((), generator=generator)
    appearance = warped.clamp(min=0) ** gamma * torch.exp(bias[:, :1])
    appearance = appearance + noise_std * torch.randn(appearance.shape, generator=generator)
    return appearance.clamp(min=0), warped_labels


def write_pseudo_subjects(folder: Path, num_train: int, num_test: int, seed: int) -> None:
    """Write the ``mni-tissue-3d`` pseudo-subjects as NIfTI (2 mm voxels).

    Args:
        folder: Task folder; ``train/{images,labels}`` and ``test/{images,labels}`` are written.
        num_train: Training subjects.
        num_test: Test subjects.
        seed: Seed of the task.
    """
    import nibabel as nib

    image, labels = template_2mm()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for role, split, count in ((0, "train", num_train), (1, "test", num_test)):
        for index in range(count):
            generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, role, index]).integers(2**62)))
            subject, subject_labels = pseudo_subject(image, labels, generator)
            for kind, array, dtype in (("images", subject, np.float32), ("labels", subject_labels, np.uint8)):
                target = folder / split / kind
                target.mkdir(parents=True, exist_ok=True)
                volume = np.ascontiguousarray(array[0, 0].numpy().astype(dtype))
                nib.save(nib.Nifti1Image(volume, affine), str(target / f"subject{index:03d}.nii.gz"))
