"""Pseudo-subjects: seeded random deformations and appearance changes of the MNI152 template.

No labeled multi-subject set installs offline, so the built-in benchmark tasks other than
``mni-tissue-2d`` (:mod:`cover.data.demo.tasks`) are made here from the one template and its
labels (:mod:`cover.data.demo.template`):

* tissue (``mni-tissue-3d``): pseudo-subjects of the template at 2 mm (the 3D demo
  pretraining's voxel size) and its tissue labels by :func:`pseudo_subject`: a random affine
  (rotation ±10° per axis, scale 0.9-1.1 per axis, translation ±3 voxels) composed with a
  smooth random elastic field (control points every 8 voxels, 2 voxels std), image warped
  linearly and labels with ``mode="nearest"``; then a smooth multiplicative bias field
  (``exp`` of a field with 0.15 std), a gamma contrast change (gamma 0.7-1.5) and Gaussian noise
  (std 0.01-0.04) (:data:`TISSUE_VARIATION`). The 3D demo pretraining samples patches of the
  same template, so such a task measures adaptation to deformations and appearance, not
  generalisation to new anatomy.
* regions (``mni-regions-2d``, ``mni-regions-3d``): 6 anatomical regions
  (:func:`~cover.data.demo.template.region_labels`) on 96 px slices or 2 mm volumes,
  SynthSeg-style (:data:`REGIONS_VARIATION`): in 2D each subject is one axial slice drawn from
  :data:`REGION_SLAB` (z 78-99 of the 1 mm template, so the anatomy itself varies between
  subjects) under a large diffeomorphic deformation (random affine: rotation ±15°, scale
  0.8-1.2 per axis, shear ±5°, translation ±6 px, composed with a stationary velocity field of
  3 px std on a 12 px control grid integrated by scaling and squaring), a bias field (0.3 std
  in log), gamma 0.6-1.6, a resolution change (down-sampled by up to 1.8x and back) and noise.
  Left and right have the same intensities, so the labels need the anatomy (the midline), not
  the intensity alone. The demo pretraining does see the template's slices of this slab
  (undeformed, unlabeled).

Every subject is drawn from its own seed (:func:`subject_seed`); training subjects use seeds
``(seed, 0, i)`` and test subjects ``(seed, 1, i)``, so the two sets are disjoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F  # noqa: N812

from cover.data.demo.template import (
    REGION_NAMES,
    TISSUE_NAMES,
    axial_slices,
    demo_volume_2mm,
    load_mni,
    mni_tissue_labels,
    region_labels,
)
from cover.geometry import affine_field, compose, random_affine_matrices, random_elastic_field, warp


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


#: Axial slices (1 mm template) the ``mni-regions-2d`` pseudo-subjects are cut from.
REGION_SLAB = (78, 100)


def _onehot_resize(labels: np.ndarray, classes: int, resize: Any) -> torch.Tensor:
    """Resize a label map as one-hot planes and arg-max them (``resize`` maps a float array to a tensor)."""
    planes = [resize((labels == k).astype(np.float32)) for k in range(classes)]
    return torch.stack(planes).argmax(dim=0).float()


def template_2mm(kind: str = "tissue") -> tuple[torch.Tensor, torch.Tensor]:
    """MNI152 T1 and labels at 2 mm, cropped to the head.

    Args:
        kind: ``tissue`` (:data:`~cover.data.demo.template.TISSUE_NAMES`) or ``regions``
            (:data:`~cover.data.demo.template.REGION_NAMES`).

    Returns:
        ``(image, labels)``: ``(1, 1, D, H, W)`` float in [0, 1] and ``(1, 1, D, H, W)`` float
        labels (array axes of the RAS volume).
    """
    image = demo_volume_2mm()[None]  # (1, 1, 99, 117, 95)
    labels, names = (mni_tissue_labels(), TISSUE_NAMES) if kind == "tissue" else (region_labels(), REGION_NAMES)
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

    Cut, padded and resized like the demo slices (:func:`~cover.data.demo.template.axial_slices`).

    Args:
        size: Slice side in pixels.

    Returns:
        ``(images, labels)``: ``(N, 1, size, size)`` float in [0, 1] and the same shape of
        float labels 0-5, one per slice ``z`` in :data:`REGION_SLAB`.
    """
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
