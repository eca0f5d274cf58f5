"""Downstream tasks of ``cover benchmark``: four built-in offline tasks and user tasks from folders.

Built-in tasks (docs/method.md §13; no labeled multi-subject set installs offline, so all come
from the one MNI152 template that nilearn installs, with its GM/WM maps):

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
* ``mni-regions-2d``: 6 anatomical regions (0 background, 1 left GM, 2 right GM, 3 left WM,
  4 right WM, 5 lateral ventricles; :func:`region_labels`) on 96 px pseudo-subject slices,
  SynthSeg-style (:data:`REGIONS_VARIATION`): each subject is one axial slice drawn from
  :data:`REGION_SLAB` (z 78-99 of the 1 mm template, so the anatomy itself varies between
  subjects) under a large diffeomorphic deformation (random affine: rotation ±15°, scale
  0.8-1.2 per axis, shear ±5°, translation ±6 px, composed with a stationary velocity field of
  3 px std on a 12 px control grid integrated by scaling and squaring), a bias field (0.3 std
  in log), gamma 0.6-1.6, a resolution change (down-sampled by up to 1.8x and back) and noise.
  Left and right have the same intensities, so the labels need the anatomy (the midline), not
  the intensity alone. 24 training subjects (the labeled pool) and 20 test subjects, disjoint
  seeds. The test images are new deformations never used in pretraining or fine-tuning; the
  demo pretraining does see the template's slices of this slab (undeformed, unlabeled).
  Fine-tuning must not flip left and right: the task sets ``finetune.augment.flip_prob: 0``.
* ``mni-regions-3d``: the same regions and variation on 2 mm pseudo-subject volumes
  (12 training, 4 test).

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

from cover.config import deep_merge, update_dataclass
from cover.data.labels import check_label_values
from cover.errors import ConfigError

BUILTIN_TASKS = ("mni-tissue-2d", "mni-tissue-3d", "mni-regions-2d", "mni-regions-3d")
#: Built-in task -> (dimension, label kind, default num_train, default num_test).
_BUILTIN = {
    "mni-tissue-2d": (2, "tissue", 8, 10),
    "mni-tissue-3d": (3, "tissue", 8, 4),
    "mni-regions-2d": (2, "regions", 24, 20),
    "mni-regions-3d": (3, "regions", 12, 4),
}
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
        intensity: Intensity preset of the images (``None``: the pretrained checkpoint's, else each
            file's default); built-in tasks use ``mri``. Formerly ``preset`` (still read).
        class_names: Optional names of labels 0, 1, ...
        label_values: Values the label maps (training and test) hold, background first: value
            ``i`` is class ``i`` (``[0, 255]`` for binary masks saved as 0/255); ``None``: the
            values are the class indices 0..K-1.
        size: Built-in 2D tasks: slice side in pixels.
        num_train: Built-in pseudo-subject tasks: training pseudo-subjects (the labeled pool;
            ``None``: 8 for ``mni-tissue-3d``, 24 for ``mni-regions-2d``, 12 for ``mni-regions-3d``).
        num_test: Built-in pseudo-subject tasks: test pseudo-subjects (``None``: 4, 20, 4).
        seed: Built-in pseudo-subject tasks: seed of the pseudo-subjects.
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
    intensity: str | None = None
    class_names: tuple[str, ...] | None = None
    label_values: tuple[int, ...] | None = None
    size: int = 96
    num_train: int | None = None
    num_test: int | None = None
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
        The task config, with the built-in tasks' dimension, intensity preset and class names filled in.
    """
    if not isinstance(values, dict) or "name" not in values:
        raise ConfigError(f"tasks[{index}]: expected a mapping with a 'name' (e.g. name: mni-tissue-2d)")
    task = update_dataclass(TaskConfig(), values, prefix=f"tasks[{index}].")
    if task.builtin:
        dim, kind, num_train, num_test = _BUILTIN[task.name]
        task = dataclasses.replace(
            task,
            dim=dim,
            intensity=task.intensity or "mri",
            class_names=task.class_names or (CLASS_NAMES if kind == "tissue" else REGION_NAMES),
            num_train=task.num_train or num_train,
            num_test=task.num_test or num_test,
        )
        if kind == "regions":  # a left-right flip would swap the left and right labels
            task = dataclasses.replace(task, finetune=deep_merge({"augment": {"flip_prob": 0.0}}, task.finetune))
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
    if task.builtin and task.name != "mni-tissue-2d" and max(task.budgets) > task.num_train:
        raise ConfigError(
            f"tasks[{index}].budgets: {list(task.budgets)} exceed num_train={task.num_train} pseudo-subjects"
        )
    try:
        check_label_values(task.label_values)
    except ConfigError as error:
        raise ConfigError(f"tasks[{index}].{error}") from None
    return task


_DESCRIPTIONS = {
    "mni-tissue-2d": "4-class tissue labelling (CSF, GM, WM) of MNI152 template axial slices: fine-tuned on z 70-77, "
    "tested on z 100-109 (never pretrained on); one template, no inter-subject variation",
    "mni-tissue-3d": "4-class tissue labelling of seeded 3D pseudo-subjects of the MNI152 template at 2 mm (mild "
    "random affine + elastic deformation, bias field, contrast, noise)",
    "mni-regions-2d": "6 anatomical regions (left/right GM, left/right WM, lateral ventricles) of 2D pseudo-subjects: "
    "one axial slice of z 78-99 of the MNI152 template per subject under a large random diffeomorphic deformation, "
    "bias field, contrast, resolution change and noise (SynthSeg-style); left and right need the anatomy, not the "
    "intensity",
    "mni-regions-3d": "the mni-regions-2d regions and variation on 3D pseudo-subjects at 2 mm",
}


def describe_task(task: TaskConfig, data: dict[str, str | None]) -> str:
    """One Markdown line saying what a task is (built-in or the user's data).

    Args:
        task: The task.
        data: Its data locations (:func:`task_data`).

    Returns:
        The line, without a list marker.
    """
    if task.builtin:
        counts = (
            ""
            if task.name == "mni-tissue-2d"
            else f" ({task.num_train} training, {task.num_test} test subjects, seed {task.seed})"
        )
        return (
            f"`{task.name}` (built in, `cover.benchmark.tasks`): {_DESCRIPTIONS[task.name]}{counts}. Made from one "
            "template: shows what pretraining changes, not clinical performance."
        )
    train = data["datalist"] or f"{data['images']} + {data['labels']}"
    test = data["test_datalist"] or f"{data['test_images']} + {data['test_labels']}"
    names = f", classes {list(task.class_names)}" if task.class_names else ""
    return f"`{task.name}` (your task, {task.dim}D{names}): labeled pool {train}; test cases {test}."


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
            kind = _BUILTIN[task.name][1]
            write_pseudo_subjects(folder, task.num_train, task.num_test, task.seed, kind, task.dim, task.size)
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


@dataclass(frozen=True)
class Variation:
    """How far a pseudo-subject departs from the template (see :func:`pseudo_subject`).

    Attributes:
        rotation_deg: Rotation angles uniform in ``±rotation_deg`` (per axis in 3D).
        scale_range: Per-axis scale uniform in this range.
        shear_deg: Shear angles uniform in ``±shear_deg``.
        translation: Translation uniform in ``±translation`` voxels per axis.
        elastic: Standard deviation of the elastic control displacements (voxels).
        control_spacing: Voxels between elastic control points.
        diffeomorphic: Treat the elastic field as a stationary velocity field and integrate it
            by scaling and squaring (a diffeomorphism even for large values); else add it as a
            displacement.
        bias: Standard deviation of the log of the smooth multiplicative bias field.
        gamma_range: Contrast change ``I ** gamma`` with gamma uniform in this range.
        noise_range: Gaussian noise standard deviation uniform in this range.
        max_downsample: Resolution change: the image is resampled to ``1/f`` of its size and back
            with ``f`` uniform in ``[1, max_downsample]`` (1: off).
    """

    rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    shear_deg: float = 0.0
    translation: float = 3.0
    elastic: float = 2.0
    control_spacing: int = 8
    diffeomorphic: bool = False
    bias: float = 0.15
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_range: tuple[float, float] = (0.01, 0.04)
    max_downsample: float = 1.0


#: ``mni-tissue-3d``: mild variation (2 mm voxels).
TISSUE_VARIATION = Variation()
#: ``mni-regions-2d``/``-3d``: large SynthSeg-style variation (about 2.4 mm pixels in 2D, 2 mm voxels in 3D).
REGIONS_VARIATION = Variation(
    rotation_deg=15.0,
    scale_range=(0.8, 1.2),
    shear_deg=5.0,
    translation=6.0,
    elastic=3.0,
    control_spacing=12,
    diffeomorphic=True,
    bias=0.3,
    gamma_range=(0.6, 1.6),
    noise_range=(0.01, 0.05),
    max_downsample=1.8,
)
#: Scaling-and-squaring steps of a diffeomorphic field.
_SQUARINGS = 6


def pseudo_subject(
    image: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, variation: Variation = TISSUE_VARIATION
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pseudo-subject: a random deformation and appearance change of the template (2D or 3D).

    The field is a random affine map (about the grid centre) composed with a smooth random
    elastic field (integrated as a stationary velocity field when ``variation.diffeomorphic``);
    the image is warped linearly and the labels with the same field, nearest-neighbour. The
    appearance then changes: ``I ** gamma`` times a smooth bias field ``exp(b)``, a resolution
    change (down- and up-sampling), Gaussian noise.

    Args:
        image: ``(1, 1, *S)`` template in [0, 1].
        labels: ``(1, 1, *S)`` float labels.
        generator: Seeded generator (CPU).
        variation: Ranges of the random changes.

    Returns:
        ``(image, labels, phi)``: the subject ``(1, 1, *S)`` (clamped at 0), its labels
        ``(1, 1, *S)`` (``warp(labels, phi, mode="nearest")``) and the displacement field
        ``(1, ndim, *S)`` in voxels.
    """
    from cover.geometry import affine_field, compose, random_affine_matrices, random_elastic_field, warp

    spatial = tuple(image.shape[2:])
    ndim = len(spatial)
    v = variation
    matrix = random_affine_matrices(
        1, ndim, rotation_deg=v.rotation_deg, num_rotations=1, scale_range=v.scale_range, shear_deg=v.shear_deg,
        generator=generator,
    )  # fmt: skip
    translation = (torch.rand(1, ndim, generator=generator) * 2 - 1) * v.translation
    elastic = random_elastic_field(
        1, spatial, magnitude=v.elastic, control_spacing=v.control_spacing, generator=generator
    )
    if v.diffeomorphic:
        elastic = elastic / 2**_SQUARINGS
        for _ in range(_SQUARINGS):
            elastic = compose(elastic, elastic)
    affine = affine_field(matrix, translation, spatial)
    # A diffeomorphism composes the two maps; the mild tissue variation adds them (as it always has).
    phi = compose(affine, elastic) if v.diffeomorphic else affine + elastic
    warped = warp(image, phi)
    warped_labels = warp(labels, phi, mode="nearest")
    bias = random_elastic_field(1, spatial, magnitude=v.bias, control_spacing=max(spatial) // 2, generator=generator)
    gamma = v.gamma_range[0] + (v.gamma_range[1] - v.gamma_range[0]) * torch.rand((), generator=generator)
    noise_std = v.noise_range[0] + (v.noise_range[1] - v.noise_range[0]) * torch.rand((), generator=generator)
    appearance = warped.clamp(min=0) ** gamma * torch.exp(bias[:, :1])
    if v.max_downsample > 1:
        factor = 1 + (v.max_downsample - 1) * float(torch.rand((), generator=generator))
        low = [max(2, round(s / factor)) for s in spatial]
        mode = "bilinear" if ndim == 2 else "trilinear"
        appearance = F.interpolate(appearance, size=low, mode=mode, align_corners=False, antialias=ndim == 2)
        appearance = F.interpolate(appearance, size=spatial, mode=mode, align_corners=False)
    appearance = appearance + noise_std * torch.randn(appearance.shape, generator=generator)
    return appearance.clamp(min=0), warped_labels, phi


def region_labels() -> np.ndarray:
    """Anatomical regions of the 1 mm template (:data:`REGION_NAMES`).

    From the tissue labels (:func:`cover.data.demo.mni_tissue_labels`): GM and WM split into
    left and right hemisphere at the midline of the symmetric template (x = 0 mm, array index
    98; left = x < 0 mm), and the lateral ventricles: the largest connected CSF component in
    the box |x| < 30 mm, -45 <= y < 35 mm, -5 <= z < 35 mm. Everything else (sulcal and
    outer CSF, non-brain) is background.

    Returns:
        ``(197, 233, 189)`` int64 labels 0-5.
    """
    from scipy import ndimage

    from cover.data.demo import mni_tissue_labels

    tissue = mni_tissue_labels()
    x = np.arange(tissue.shape[0])[:, None, None] - _ORIGIN[0]
    left = x < 0
    regions = np.zeros_like(tissue)
    regions[(tissue == 2) & left] = 1
    regions[(tissue == 2) & ~left] = 2
    regions[(tissue == 3) & left] = 3
    regions[(tissue == 3) & ~left] = 4
    box = np.zeros(tissue.shape, dtype=bool)
    (ox, oy, oz) = _ORIGIN
    box[ox - 30 : ox + 30, oy - 45 : oy + 35, oz - 5 : oz + 35] = True
    components, count = ndimage.label((tissue == 1) & box)
    if count:
        sizes = ndimage.sum(np.ones_like(components), components, range(1, count + 1))
        regions[components == int(np.argmax(sizes)) + 1] = 5
    return regions


#: Array index of the MNI origin (0, 0, 0 mm) in the 1 mm template.
_ORIGIN = (98, 134, 72)
REGION_NAMES = ("background", "left GM", "right GM", "left WM", "right WM", "ventricles")
#: Axial slices (1 mm template) the ``mni-regions-2d`` pseudo-subjects are cut from.
REGION_SLAB = (78, 100)


def _onehot_resize(labels: np.ndarray, classes: int, resize: Any) -> torch.Tensor:
    """Resize a label map as one-hot planes and arg-max them (``resize`` maps a float array to a tensor)."""
    planes = [resize((labels == k).astype(np.float32)) for k in range(classes)]
    return torch.stack(planes).argmax(dim=0).float()


def template_2mm(kind: str = "tissue") -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 and labels at 2 mm, cropped to the head.

    Args:
        kind: ``tissue`` (:data:`CLASS_NAMES`) or ``regions`` (:data:`REGION_NAMES`).

    Returns:
        ``(image, labels)``: ``(1, 1, D, H, W)`` float in [0, 1] and ``(1, 1, D, H, W)`` float
        labels (array axes of the RAS volume).
    """
    from cover.data.demo import demo_volume_2mm, mni_tissue_labels

    image = demo_volume_2mm()[None]  # (1, 1, 99, 117, 95)
    labels, names = (mni_tissue_labels(), CLASS_NAMES) if kind == "tissue" else (region_labels(), REGION_NAMES)
    size = tuple(image.shape[2:])

    def resize(plane: np.ndarray) -> torch.Tensor:
        volume = torch.from_numpy(plane)[None, None]
        return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)[0, 0]

    label_map = _onehot_resize(labels, len(names), resize)[None, None]
    head = np.argwhere(image[0, 0].numpy() > 0.05)
    low = np.maximum(head.min(axis=0) - 2, 0)
    high = np.minimum(head.max(axis=0) + 3, image.shape[2:])
    crop = (slice(None), slice(None)) + tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    return image[crop].contiguous(), label_map[crop].contiguous()


def region_slices(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``mni-regions-2d`` templates: axial slices of :data:`REGION_SLAB` with region labels.

    Cut, padded and resized like the demo slices (:func:`cover.data.demo.axial_slices`).

    Args:
        size: Slice side in pixels.

    Returns:
        ``(images, labels)``: ``(N, 1, size, size)`` float in [0, 1] and the same shape of
        float labels 0-5, one per slice ``z`` in :data:`REGION_SLAB`.
    """
    from cover.data.demo import axial_slices, load_mni

    z_values = range(*REGION_SLAB)
    images = axial_slices(load_mni("t1"), z_values, (size, size)).clamp(0, 1)
    labels = region_labels()

    def resize(plane: np.ndarray) -> torch.Tensor:
        return axial_slices(plane, z_values, (size, size))[:, 0]

    return images, _onehot_resize(labels, len(REGION_NAMES), resize)[:, None]


def subject_seed(seed: int, role: int, index: int) -> int:
    """Seed of pseudo-subject ``index`` of a split (role 0 training, 1 test) of a task seed."""
    return int(np.random.default_rng([seed, role, index]).integers(2**62))


def write_pseudo_subjects(
    folder: Path, num_train: int, num_test: int, seed: int, kind: str = "tissue", dim: int = 3, size: int = 96
) -> None:
    """Write a built-in task's pseudo-subjects: ``train/{images,labels}`` and ``test/{images,labels}``.

    3D subjects are NIfTI (2 mm voxels) made from :func:`template_2mm`; 2D subjects are 8-bit
    PNG made from one slice of :func:`region_slices` drawn per subject. ``train/subjects.json``
    and ``test/subjects.json`` list each subject's seed (and 2D slice).

    Args:
        folder: Task folder.
        num_train: Training subjects.
        num_test: Test subjects.
        seed: Seed of the task.
        kind: ``tissue`` (mild :data:`TISSUE_VARIATION`) or ``regions`` (:data:`REGIONS_VARIATION`).
        dim: 2 (``regions`` only) or 3.
        size: 2D slice side in pixels.
    """
    import nibabel as nib
    from PIL import Image

    if dim == 2:
        images, labels = region_slices(size)
    else:
        image, label_map = template_2mm(kind)
        images, labels = image, label_map
    variation = TISSUE_VARIATION if kind == "tissue" else REGIONS_VARIATION
    for role, split, count in ((0, "train", num_train), (1, "test", num_test)):
        listing = []
        for kind_ in ("images", "labels"):
            (folder / split / kind_).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            generator = torch.Generator().manual_seed(subject_seed(seed, role, index))
            pick = int(torch.randint(len(images), (), generator=generator)) if len(images) > 1 else 0
            subject, subject_labels, _ = pseudo_subject(
                images[pick : pick + 1], labels[pick : pick + 1], generator, variation
            )
            entry = {"name": f"subject{index:03d}", "seed": subject_seed(seed, role, index)}
            if dim == 2:
                entry["z"] = REGION_SLAB[0] + pick
                plane = subject[0, 0] / torch.quantile(subject[0, 0], 0.995).clamp(min=1e-6)  # 8 bits, no clipping
                pixels = np.rint(plane.clamp(0, 1).numpy() * 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / split / "images" / f"subject{index:03d}.png")
                Image.fromarray(subject_labels[0, 0].numpy().astype(np.uint8)).save(
                    folder / split / "labels" / f"subject{index:03d}.png"
                )
            else:
                affine = np.diag([2.0, 2.0, 2.0, 1.0])
                for kind_, array, dtype in (("images", subject, np.float32), ("labels", subject_labels, np.uint8)):
                    volume = np.ascontiguousarray(array[0, 0].numpy().astype(dtype))
                    nib.save(
                        nib.Nifti1Image(volume, affine), str(folder / split / kind_ / f"subject{index:03d}.nii.gz")
                    )
            listing.append(entry)
        (folder / split / "subjects.json").write_text(json.dumps(listing, indent=1))
