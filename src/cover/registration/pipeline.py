"""Image registration with a pretrained COVER vector head (``cover register``).

A COVER model predicts, for every voxel ``p`` of view b, where its partner lies in view a:
``view_b(p) ≈ view_a(p + phi(p))``. With ``view_b`` = the *fixed* image and ``view_a`` = the
*moving* image this is a registration: ``warp(moving, phi) ≈ fixed``.

Pipeline (one implementation for 2D and 3D):

1. Read both images with :func:`cover.data.readers.read_image`. A 2D checkpoint also accepts
   single-slice volumes (one axis of size 1), which are squeezed to 2D.
2. Normalise each image with the checkpoint's intensity preset (the file's modality decides
   when the checkpoint used ``auto``).
3. Place the moving image (and its labels, nearest neighbour) in the fixed image's voxel grid:
   through the world coordinates of both headers when both are volumes with geometry,
   unchanged when both grids are equal; plain images without geometry must have equal sizes.
4. Resample both to the checkpoint's voxel spacing when the checkpoint records one and the
   fixed image has a physical spacing that differs (linear, ``align_corners=False``); pad to a
   multiple of the backbone divisor (16 for the default U-Net).
5. Optional affine pre-alignment (centre of mass, then Adam on local normalised cross
   correlation), the network's field, optional per-pair refinement (Adam on a coarse-grid
   version of the field, local normalised cross correlation + diffusion regulariser, MONAI
   losses).
6. Map the field back to the fixed image's grid, warp the moving image (linear) and labels
   (nearest), write everything next to a PNG overlay, ``metrics.json`` and ``config.yaml``.

Grids (steps 1, 3, 4) live in :mod:`cover.registration.grid`, the optimisation (step 5)
in :mod:`cover.registration.fit`. :func:`run_registration` runs the stages: load
(:func:`read_pair`, :func:`read_labels`, :func:`working_grid`), align (:func:`align`), refine
(:func:`refine`) and write (:func:`write_field`, :func:`write_warped_moving`,
:func:`write_warped_labels`, :func:`plot_registration`, ``metrics.json``).

The written field ``phi`` has shape ``(ndim, *spatial)`` on the fixed image file's own voxel
grid, in its array axis order as stored (not the reader's RAS order; ``(rows, cols)`` for plain
2D images). Channel ``k`` is the displacement along the file's array axis ``k`` in voxels, and
the moving image's content at fixed voxel ``p`` is found at fixed-grid coordinate ``p + phi(p)``
(the moving image placed in the fixed grid as in step 3). Warped images and labels are written
on the same grid (:func:`cover.data.readers.write_like`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cover.config import save_yaml, update_dataclass
from cover.data.readers import ImageRecord, read_image, write_like
from cover.errors import ConfigError, DataError
from cover.geometry import affine_field, field_jacobian_determinant, resize_field, warp
from cover.models.loading import load_vector_model
from cover.registration.fit import affine_then, fit_affine, refine_field
from cover.registration.grid import (
    GEOMETRY_FORMATS,
    Placement,
    crop_padding,
    pad_to_multiple,
    placement_for,
    resize_linear,
    same_grid,
    target_spacing,
    to_fixed_grid,
    working_size,
)
from cover.runtime import json_safe


@dataclass
class RegisterConfig:
    """Everything ``cover register`` needs.

    Attributes:
        checkpoint: A ``cover pretrain`` checkpoint (``OUT/checkpoints/step_*.pt``), a run
            folder or its ``checkpoints/`` folder (the newest valid checkpoint is used). The method must be ``cover``.
        fixed: The fixed (target) image.
        moving: The moving image, warped onto the fixed one.
        out: Output folder.
        moving_labels: Label map on the moving image's grid, warped with nearest neighbour.
        fixed_labels: Label map on the fixed image's grid; gives Dice before/after.
        affine: Affine pre-alignment before the network.
        affine_steps: Adam steps of the affine fit.
        refine_steps: Adam steps refining the field on the pair (0 = network only).
        refine_lr: Adam learning rate of the refinement, in voxels.
        refine_kernel: Window of the local normalised cross correlation (voxels per axis).
        refine_smoothness: Weight of the diffusion regulariser of the refinement.
        refine_grid: The refined field lives on a grid this many times coarser than the image
            (linearly interpolated), started from the area average of the network's field; this
            keeps it smooth. 1 optimises every voxel.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        overwrite: Write into a non-empty output folder.
    """

    checkpoint: str = ""
    fixed: str = ""
    moving: str = ""
    out: str = "cover_runs/register"
    moving_labels: str | None = None
    fixed_labels: str | None = None
    affine: bool = False
    affine_steps: int = 100
    refine_steps: int = 0
    refine_lr: float = 0.5
    refine_kernel: int = 7
    refine_smoothness: float = 1.0
    refine_grid: int = 4
    device: str = "auto"
    overwrite: bool = False


def resolve_register_config(values: dict[str, Any]) -> RegisterConfig:
    """Build and validate a :class:`RegisterConfig` (one-line :class:`ConfigError` s).

    Args:
        values: Config keys to values (``None`` values are ignored).

    Returns:
        The validated config.
    """
    config = update_dataclass(RegisterConfig(), {k: v for k, v in values.items() if v is not None})
    for key in ("checkpoint", "fixed", "moving", "out"):
        if not getattr(config, key):
            raise ConfigError(f"{key}: required (e.g. --{key} PATH)")
    checks = [
        (config.affine_steps >= 0, "affine_steps", "must be >= 0"),
        (config.refine_steps >= 0, "refine_steps", "must be >= 0"),
        (config.refine_lr > 0, "refine_lr", "must be positive"),
        (config.refine_kernel >= 3 and config.refine_kernel % 2 == 1, "refine_kernel", "must be odd and >= 3"),
        (config.refine_smoothness >= 0, "refine_smoothness", "must be >= 0"),
        (config.refine_grid >= 1, "refine_grid", "must be at least 1"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"{key}: {message}")
    return config


# ------------------------------------------------------------------------ metrics


def dice_per_label(prediction: np.ndarray, reference: np.ndarray, labels: list[int]) -> dict[str, float]:
    """Dice per foreground label with MONAI's ``compute_dice``.

    Args:
        prediction: ``(*S)`` integer labels.
        reference: ``(*S)`` integer labels.
        labels: Labels to score (label 0, background, is not scored).

    Returns:
        ``{"label": dice}``; a label absent from both maps is not scored (NaN, never 1.0), one
        present in only one scores 0, as in ``cover evaluate`` (:mod:`cover.downstream.metrics`).
    """
    from monai.metrics import compute_dice

    if not labels:
        return {}
    pred = torch.from_numpy(np.stack([prediction == k for k in labels]))[None].float()
    ref = torch.from_numpy(np.stack([reference == k for k in labels]))[None].float()
    scores = compute_dice(pred, ref, include_background=True, ignore_empty=False)[0]
    absent = (pred.sum(dim=tuple(range(2, pred.ndim))) + ref.sum(dim=tuple(range(2, ref.ndim))))[0] == 0
    scores = torch.where(absent, torch.full_like(scores, float("nan")), scores)
    return {str(k): float(v) for k, v in zip(labels, scores, strict=True)}


def mean_score(scores: dict[str, float]) -> float | None:
    """Mean of the scored labels (NaN ones left out); None when no label was scored."""
    values = [v for v in scores.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else None


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays (0 when one is constant)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


# ----------------------------------------------------------------------- output


def _output_name(stem: str, record: ImageRecord) -> str:
    """``stem`` + the fixed image's own suffix (or the format written instead of DICOM/JPEG/MGH/NPZ)."""
    from cover.downstream.outputs import output_suffix

    return stem + output_suffix(record.path, record.format)


def _fit_format(values: np.ndarray, record: ImageRecord, labels: bool) -> np.ndarray:
    """Values as the output format can hold them (PNG: rounded non-negative integers)."""
    if labels:
        return np.rint(values).astype(np.int32 if values.max(initial=0) > 255 else np.uint8)
    if _output_name("", record).lower() in (".png", ".bmp"):
        top = 65535 if float(values.max(initial=0)) > 255 else 255
        return np.clip(np.rint(values), 0, top).astype(np.uint16 if top > 255 else np.uint8)
    return values.astype(np.float32)


def write_field(field: np.ndarray, fixed: ImageRecord, out: Path) -> list[str]:
    """Write the field as ``field.npy`` and, for volumes, ``field.nii.gz``, on the fixed file's grid.

    Both are in the fixed file's own voxel order (as stored, not the reader's RAS order), and
    component ``k`` is the displacement along that file's array axis ``k``
    (:func:`cover.data.writers.field_to_source_grid`).

    Args:
        field: ``(ndim_record, *record_spatial)`` displacements in fixed voxels, record axis order.
        fixed: Fixed record.
        out: Output folder.

    Returns:
        Names of the written files.
    """
    import nibabel as nib

    from cover.data.writers import field_to_source_grid

    values, affine = field_to_source_grid(field.astype(np.float32), fixed)
    np.save(out / "field.npy", values)
    names = ["field.npy"]
    if fixed.spatial_dims == 3 and affine is not None:
        # One vector per voxel on the 4th axis, intent "vector"; a 2D source keeps one slice.
        data = np.moveaxis(values, 0, -1)
        if data.ndim == 3:
            data = data[:, :, None, :]
        image = nib.Nifti1Image(data, affine)
        image.header.set_intent("vector")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nib.save(image, str(out / "field.nii.gz"))
        names.append("field.nii.gz")
    return names


def _display(array: np.ndarray, ras: bool = False) -> np.ndarray:
    """``(*S)`` -> 2D: the array itself, or its middle slice along the last axis in 3D.

    ``ras``: the axes are RAS canonical; the slice is shown radiologically (:func:`screen_view`).
    """
    from cover.downstream.figures import screen_view

    plane = array if array.ndim == 2 else array[..., array.shape[-1] // 2]
    return screen_view(plane) if ras else plane


def _display_field(field: np.ndarray, ras: bool) -> np.ndarray:
    """``(ndim, *S)`` -> ``(2, H, W)`` in-plane displacements along the picture's rows and columns."""
    plane = field if field.shape[0] == 2 else field[:2, ..., field.shape[-1] // 2]
    if not ras:
        return plane
    # screen_view: rows run along -axis 1, columns along -axis 0.
    return np.stack([_display(-plane[1], True), _display(-plane[0], True)])


def _checkerboard(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(H, W)`` tiles taken alternately from two ``(H, W)`` pictures (at least 2 x 2 tiles, about 8 pixels each)."""
    tiles = max(2, min(first.shape) // 8)
    rows, cols = np.indices(first.shape)
    board = ((rows * tiles // first.shape[0] + cols * tiles // first.shape[1]) % 2).astype(bool)
    return np.where(board, first, second)


def _overlay_title(ras: bool, volume: bool, labels: bool) -> str:
    """The overlay's title: orientation, which slice, what the contours and colours mean."""
    note = "radiological: patient's right on the left" if ras else "rows = array axis 0, columns = axis 1"
    note += "; middle slice along the last axis" if volume else ""
    if labels:
        note += "; contours: fixed labels yellow, warped labels red"
    return f"cover register ({note}; field hue = direction, saturation = length)"


def plot_registration(
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    field: np.ndarray,
    jacobian: np.ndarray,
    path: Path,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
    ras: bool = False,
) -> None:
    """Overlay PNG: fixed, moving, warped, checkerboard, field colour wheel, Jacobian.

    3D inputs show the middle slice along the last array axis (axial for RAS volumes) and the
    in-plane field components. Images with RAS canonical axes (``ras``) are shown in the
    radiological convention (:func:`cover.downstream.figures.screen_view`), others as stored.

    Args:
        fixed: ``(*S)`` normalised fixed image (network axes).
        moving: ``(*S)`` normalised moving image in the fixed grid.
        warped: ``(*S)`` normalised warped moving image.
        field: ``(ndim, *S)`` displacements in voxels.
        jacobian: ``(*S)`` Jacobian determinant.
        path: Destination PNG.
        labels: Optional ``(fixed_labels, warped_labels)`` drawn as contours on the warped image.
        ras: The axes are RAS canonical (a volume read with its geometry, or a slice of one).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cover.pretraining.figures import field_to_rgb

    f2, m2, w2 = _display(fixed, ras), _display(moving, ras), _display(warped, ras)
    plane = _display_field(field, ras)
    checker = _checkerboard(f2, w2)
    norm = float(np.hypot(plane[0], plane[1]).max()) or 1.0
    panels = [
        ("fixed", f2, "gray"),
        ("moving", m2, "gray"),
        ("warped moving", w2, "gray"),
        ("checkerboard fixed / warped", checker, "gray"),
        (f"field (max {norm:.1f} vox)", field_to_rgb(plane, norm), None),
        ("Jacobian determinant", _display(jacobian, ras), "RdBu"),
    ]
    low, high = float(np.percentile(f2, 1)), float(np.percentile(f2, 99.5)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, image, cmap) in zip(axes, panels, strict=True):
        if cmap == "RdBu":
            shown = ax.imshow(image, cmap=cmap, vmin=0.0, vmax=2.0)
            fig.colorbar(shown, ax=ax, fraction=0.046)
        elif cmap:
            ax.imshow(image, cmap=cmap, vmin=low, vmax=high if high > low else low + 1)
        else:
            ax.imshow(image)
        if labels is not None and title == "warped moving":
            ax.contour(_display(labels[0], ras), levels=np.unique(labels[0])[1:] - 0.5, colors="yellow", linewidths=0.5)
            ax.contour(_display(labels[1], ras), levels=np.unique(labels[1])[1:] - 0.5, colors="red", linewidths=0.5)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(_overlay_title(ras, fixed.ndim == 3, labels is not None), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------- load


@dataclass
class RegistrationPair:
    """The fixed and moving images (and label maps) read, normalised and placed in the fixed grid.

    Arrays are in the fixed record's array axis order, ``S`` its spatial size.

    Attributes:
        fixed: Fixed record.
        moving: Moving record.
        placement: How the fixed record maps onto the network's spatial dimensions.
        presets: Intensity preset applied to each image, ``{"fixed": ..., "moving": ...}``.
        fixed_image: ``(C, *S)`` normalised fixed image.
        moving_image: ``(C, *S)`` normalised moving image in the fixed grid (linear).
        moving_raw: ``(C, *S)`` moving image's own values in the fixed grid (linear).
        moving_labels: ``(1, *S)`` float32 moving labels in the fixed grid (nearest), or ``None``.
        fixed_labels: ``(1, *S)`` float32 fixed labels, or ``None``.
    """

    fixed: ImageRecord
    moving: ImageRecord
    placement: Placement
    presets: dict[str, str]
    fixed_image: np.ndarray
    moving_image: np.ndarray
    moving_raw: np.ndarray
    moving_labels: np.ndarray | None = None
    fixed_labels: np.ndarray | None = None

    def on_network_grid(self, array: np.ndarray, device: torch.device) -> torch.Tensor:
        """``(C, *S)`` array -> ``(1, C, *S_network)`` float tensor on ``device`` (2D slices squeezed)."""
        return torch.from_numpy(self.placement.to_network(array))[None].float().to(device)


def read_pair(fixed: str, moving: str, metadata: dict[str, Any]) -> RegistrationPair:
    """Read both images, normalise each with the checkpoint's preset, place the moving one in the fixed grid.

    Args:
        fixed: Fixed image path.
        moving: Moving image path.
        metadata: The checkpoint's metadata (``spatial_dims``, ``in_channels``, ``data.preset``).

    Returns:
        The pair, without label maps.

    Raises:
        DataError: An image's channels or dimension do not fit the checkpoint.
    """
    from cover.data.presets import normalize
    from cover.downstream.loading import resolve_preset

    ndim = int(metadata["spatial_dims"])
    in_channels = int(metadata.get("in_channels", 1))
    fixed_rec = read_image(fixed, channels=in_channels > 1)
    moving_rec = read_image(moving, channels=in_channels > 1)
    for record in (fixed_rec, moving_rec):
        if record.channels != in_channels:
            raise DataError(f"{record.path}: has {record.channels} channels; the checkpoint expects {in_channels}")
    placement = placement_for(fixed_rec, ndim)
    placement_for(moving_rec, ndim)  # the moving image must fit the checkpoint's dimension too

    # Intensities: the checkpoint's preset (per file from its modality when it used "auto").
    preset = (metadata.get("data") or {}).get("preset")
    presets = {}
    normalised = {}
    for role, record in (("fixed", fixed_rec), ("moving", moving_rec)):
        chosen = resolve_preset(preset, record)
        presets[role] = chosen
        normalised[role] = normalize(record.array, chosen)
    return RegistrationPair(
        fixed=fixed_rec,
        moving=moving_rec,
        placement=placement,
        presets=presets,
        fixed_image=normalised["fixed"],
        moving_image=to_fixed_grid(normalised["moving"], moving_rec, fixed_rec),
        moving_raw=to_fixed_grid(moving_rec.array, moving_rec, fixed_rec),
    )


def read_labels(pair: RegistrationPair, moving_labels: str | None, fixed_labels: str | None) -> None:
    """Read the label maps into ``pair`` (the moving ones placed in the fixed grid, nearest neighbour).

    Args:
        pair: The images the label maps belong to; its ``moving_labels``/``fixed_labels`` are set.
        moving_labels: Label map on the moving image's grid, or ``None``.
        fixed_labels: Label map on the fixed image's grid, or ``None``.
    """
    from cover.downstream.loading import read_label_map

    if moving_labels:
        values = read_label_map(moving_labels, pair.moving)[None].astype(np.float32)
        pair.moving_labels = to_fixed_grid(values, pair.moving, pair.fixed, mode="nearest")
    if fixed_labels:
        pair.fixed_labels = read_label_map(fixed_labels, pair.fixed)[None].astype(np.float32)


@dataclass
class WorkingGrid:
    """The grid the network sees: the fixed image's, resampled to the checkpoint's voxel spacing.

    Attributes:
        size: Fixed image's spatial size on the network's axes.
        spacing: Its voxel spacing (1.0 per axis for plain images).
        target: The checkpoint's voxel spacing, or ``None`` when it records none.
        physical: ``spacing`` comes from a header with geometry.
        work: The working size (``size`` when no resampling applies).
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    target: tuple[float, ...] | None
    physical: bool
    work: tuple[int, ...]


def working_grid(pair: RegistrationPair, size: tuple[int, ...], metadata: dict[str, Any]) -> WorkingGrid:
    """The working grid of a pair whose fixed image has network-grid size ``size``.

    Args:
        pair: The images (the fixed record gives spacing and format).
        size: Fixed image's spatial size on the network's axes.
        metadata: The checkpoint's metadata (its ``data.spacing``).

    Returns:
        The grid.
    """
    spacing = pair.placement.spacing(pair.fixed)
    target = target_spacing(metadata, len(size))
    physical = pair.fixed.format in GEOMETRY_FORMATS
    return WorkingGrid(size, spacing, target, physical, working_size(size, spacing, target, physical))


# ------------------------------------------------------------------ align, refine


@dataclass
class Alignment:
    """The network's field on the working grid, after the optional affine pre-alignment.

    Attributes:
        phi: ``(1, ndim, *S)`` field with ``warp(moving, phi) ≈ fixed`` (affine included).
        matrix: ``(ndim, ndim)`` affine matrix, or ``None`` without pre-alignment.
        translation: ``(ndim,)`` affine translation in voxels, or ``None``.
        pads: Zero padding per axis added for the network, ``(before, after)``.
    """

    phi: torch.Tensor
    matrix: torch.Tensor | None
    translation: torch.Tensor | None
    pads: list[tuple[int, int]]


def align(
    model: torch.nn.Module,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    divisor: int,
    affine_steps: int | None,
    kernel: int,
) -> Alignment:
    """Optional affine pre-alignment, then the network's field.

    Args:
        model: COVER model with ``predict_field``.
        fixed: ``(1, C, *S)`` normalised fixed image on the working grid.
        moving: ``(1, C, *S)`` normalised moving image on the same grid.
        divisor: The backbone's size divisor (inputs are zero-padded to multiples of it).
        affine_steps: Adam steps of the affine fit; ``None``: no affine pre-alignment.
        kernel: Window of the affine fit's local normalised cross correlation.

    Returns:
        The field (affine then network) and the affine's parameters.
    """
    matrix = translation = None
    moving_in = moving
    if affine_steps is not None:
        matrix, translation = fit_affine(fixed, moving, affine_steps, kernel=kernel)
        moving_in = warp(moving, affine_field(matrix[None], translation[None], fixed.shape[2:]))
    fixed_p, pads = pad_to_multiple(fixed, divisor)
    moving_p, _ = pad_to_multiple(moving_in, divisor)
    with torch.no_grad():
        phi = crop_padding(model.predict_field(moving_p, fixed_p), pads)
    if matrix is not None:
        phi = affine_then(matrix, translation, phi)
    return Alignment(phi, matrix, translation, pads)


def refine(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    phi: torch.Tensor,
    steps: int,
    lr: float,
    kernel: int,
    smoothness: float,
    grid: int,
) -> tuple[torch.Tensor, list[float]]:
    """Per-pair refinement of a field (:func:`cover.registration.fit.refine_field`); none when ``steps`` is 0.

    Args:
        fixed: ``(1, C, *S)`` normalised fixed image on the working grid.
        moving: ``(1, C, *S)`` normalised moving image on the same grid.
        phi: ``(1, ndim, *S)`` starting field.
        steps: Adam steps (0: ``phi`` is returned as it is).
        lr: Adam learning rate, in voxels.
        kernel: Window of the local normalised cross correlation.
        smoothness: Weight of the diffusion regulariser.
        grid: Coarsening factor of the refined field's grid.

    Returns:
        ``(phi (1, ndim, *S), loss per step)``.
    """
    if steps <= 0:
        return phi, []
    return refine_field(fixed, moving, phi, steps, lr=lr, kernel=kernel, smoothness=smoothness, grid=grid)


def network_field(
    model: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor, config: RegisterConfig, divisor: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[tuple[int, int]], list[float]]:
    """The field on the working grid: optional affine, the network, optional refinement.

    Args:
        model: COVER model with ``predict_field``.
        fixed: ``(1, C, *S)`` normalised fixed image on the working grid.
        moving: ``(1, C, *S)`` normalised moving image on the same grid.
        config: Registration settings.
        divisor: The backbone's size divisor (inputs are zero-padded to multiples of it).

    Returns:
        ``(phi (1, ndim, *S) with warp(moving, phi) ≈ fixed, affine matrix or None, affine
        translation or None, padding per axis, refinement losses)``.
    """
    aligned = align(model, fixed, moving, divisor, _affine_steps(config), config.refine_kernel)
    phi, losses = _refine_with(config, fixed, moving, aligned.phi)
    return phi, aligned.matrix, aligned.translation, aligned.pads, losses


def _affine_steps(config: RegisterConfig) -> int | None:
    """The affine fit's steps, or ``None`` when the config asks for no pre-alignment."""
    return config.affine_steps if config.affine else None


def _refine_with(
    config: RegisterConfig, fixed: torch.Tensor, moving: torch.Tensor, phi: torch.Tensor
) -> tuple[torch.Tensor, list[float]]:
    """:func:`refine` with the config's ``refine_*`` settings."""
    return refine(
        fixed,
        moving,
        phi,
        config.refine_steps,
        lr=config.refine_lr,
        kernel=config.refine_kernel,
        smoothness=config.refine_smoothness,
        grid=config.refine_grid,
    )


# -------------------------------------------------------------------------- write


def field_in_record_axes(phi: np.ndarray, pair: RegistrationPair) -> np.ndarray:
    """A field on the network's axes as one on the fixed record's (a squeezed axis gets a zero component).

    Args:
        phi: ``(ndim, *S_network)`` displacements in voxels.
        pair: The images (the fixed record and its placement).

    Returns:
        ``(ndim_record, *S_record)`` float32 displacements, record axis order.
    """
    placement, record = pair.placement, pair.fixed
    field = np.zeros((record.spatial_dims, *phi.shape[1:]), dtype=np.float32)
    axes = [a for a in range(record.spatial_dims) if a != placement.squeeze_axis]
    field[axes] = phi
    return placement.to_record(field)


def write_warped_moving(phi: torch.Tensor, pair: RegistrationPair, out: Path) -> str:
    """Warp the moving image's own values (linear) and write them in the fixed image's format and geometry.

    Args:
        phi: ``(1, ndim, *S)`` field on the fixed image's network grid (and its device).
        pair: The images.
        out: Output folder.

    Returns:
        The written file's name.
    """
    moving = pair.on_network_grid(pair.moving_raw, phi.device)
    warped = pair.placement.to_record(warp(moving, phi)[0].cpu().numpy())
    name = _output_name("warped_moving", pair.fixed)
    write_like(_fit_format(warped, pair.fixed, labels=False), pair.fixed, out / name)
    return name


def write_warped_labels(phi: torch.Tensor, pair: RegistrationPair, out: Path) -> tuple[np.ndarray, str]:
    """Warp the moving labels (nearest) and write them in the fixed image's format and geometry.

    Args:
        phi: ``(1, ndim, *S)`` field on the fixed image's network grid (and its device).
        pair: The images, with ``moving_labels``.
        out: Output folder.

    Returns:
        ``(warped labels (*S) int64 on the network grid, the written file's name)``.
    """
    labels = pair.on_network_grid(pair.moving_labels, phi.device)
    warped = np.rint(warp(labels, phi, mode="nearest")[0, 0].cpu().numpy()).astype(np.int64)
    name = _output_name("warped_moving_labels", pair.fixed)
    write_like(_fit_format(pair.placement.to_record(warped[None]), pair.fixed, labels=True), pair.fixed, out / name)
    return warped, name


def dice_before_after(pair: RegistrationPair, warped_labels: np.ndarray) -> dict[str, Any]:
    """Dice per label of the moving labels against the fixed ones, before and after warping.

    Args:
        pair: The images, with both label maps.
        warped_labels: ``(*S)`` warped moving labels on the network grid.

    Returns:
        ``dice_before``, ``dice_after`` (per label present in either map) and their means.
    """
    before = np.rint(pair.placement.to_network(pair.moving_labels)[0]).astype(np.int64)
    reference = np.rint(pair.placement.to_network(pair.fixed_labels)[0]).astype(np.int64)
    present = sorted(int(k) for k in set(np.unique(reference)) | set(np.unique(before)) if k != 0)
    metrics = {
        "dice_before": dice_per_label(before, reference, present),
        "dice_after": dice_per_label(warped_labels, reference, present),
    }
    for key in ("before", "after"):
        metrics[f"mean_dice_{key}"] = mean_score(metrics[f"dice_{key}"])
    return metrics


def _field_description(path: Path) -> dict[str, Any]:
    """What ``metrics.json`` says about the written field file."""
    return {
        "file": path.name,
        "shape": list(np.load(path, mmap_mode="r").shape),
        "channels": "displacement along array axis k of the fixed image file as stored (its own voxel "
        "order; (rows, cols) for plain 2D images)",
        "units": "voxels of the fixed image's grid",
        "meaning": "moving content for fixed voxel p is at fixed-grid coordinate p + phi(p)",
    }


def _preprocessing(pair: RegistrationPair, grid: WorkingGrid, pads: list[tuple[int, int]]) -> dict[str, Any]:
    """What ``metrics.json`` says about presets, grids and padding."""
    return {
        "preset": pair.presets,
        "fixed_size": list(grid.size),
        "fixed_spacing": list(grid.spacing),
        "checkpoint_spacing": list(grid.target) if grid.target else None,
        "spacing_is_physical": grid.physical,
        "working_size": list(grid.work),
        "padding": [list(p) for p in pads],
        "moving_resampled_to_fixed_grid": not same_grid(pair.fixed, pair.moving),
    }


def _affine_description(aligned: Alignment) -> dict[str, Any] | None:
    """What ``metrics.json`` says about the affine pre-alignment (``None`` without one)."""
    if aligned.matrix is None:
        return None
    return {
        "matrix": aligned.matrix.cpu().tolist(),
        "translation_voxels": aligned.translation.cpu().tolist(),
        "about": "grid centre",
    }


def _quality(
    fixed: torch.Tensor, moving: torch.Tensor, warped: np.ndarray, phi: np.ndarray, jacobian: np.ndarray
) -> dict[str, float]:
    """Folding, displacement and image correlation before and after warping.

    Args:
        fixed: ``(1, C, *S)`` normalised fixed image.
        moving: ``(1, C, *S)`` normalised moving image in the fixed grid.
        warped: ``(C, *S)`` normalised warped moving image.
        phi: ``(ndim, *S)`` field in voxels.
        jacobian: ``(*S)`` Jacobian determinant of the field.
    """
    return {
        "nonpositive_jacobian_percent": float(100.0 * (jacobian <= 0).mean()),
        "jacobian_min": float(jacobian.min()),
        "mean_displacement_voxels": float(np.linalg.norm(phi, axis=0).mean()),
        "correlation_before": correlation(fixed[0].cpu().numpy(), moving[0].cpu().numpy()),
        "correlation_after": correlation(fixed[0].cpu().numpy(), warped),
    }


# -------------------------------------------------------------------------- API


def register(
    checkpoint: str | Path,
    fixed: str | Path,
    moving: str | Path,
    out: str | Path,
    moving_labels: str | Path | None = None,
    fixed_labels: str | Path | None = None,
    affine: bool = False,
    refine_steps: int = 0,
    device: str = "auto",
    **options: Any,
) -> dict[str, Any]:
    """Register ``moving`` onto ``fixed`` with a pretrained COVER vector head.

    Writes into ``out``: ``field.npy`` (and ``field.nii.gz`` for volumes; see the module
    docstring for axis order and units), ``warped_moving.*`` and ``warped_moving_labels.*`` in
    the fixed image's format and geometry, ``overlay.png``, ``metrics.json`` and ``config.yaml``.

    Args:
        checkpoint: ``cover pretrain`` checkpoint (or run folder) of a ``cover`` model.
        fixed: Fixed image.
        moving: Moving image.
        out: Output folder (must be empty or new unless ``overwrite=True``).
        moving_labels: Labels on the moving grid, warped with nearest neighbour.
        fixed_labels: Labels on the fixed grid; Dice per label before and after.
        affine: Affine pre-alignment.
        refine_steps: Per-pair refinement steps (0 = network only).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        **options: Other :class:`RegisterConfig` keys (``affine_steps``, ``refine_lr``,
            ``refine_kernel``, ``refine_smoothness``, ``refine_grid``, ``overwrite``).

    Returns:
        The content of ``metrics.json``: ``nonpositive_jacobian_percent``, ``dice_before``,
        ``dice_after``, ``mean_dice_before``, ``mean_dice_after`` (with fixed labels),
        ``correlation_before``/``after``, preprocessing details and ``files``.

    Examples:
        Two demo slices (from :func:`cover.finetune`'s example) registered with the demo
        backbone of :func:`cover.pretrain`'s example, the moving slice's labels carried along:

        >>> import cover
        >>> slices = "runs/seg/demo_data/test/"
        >>> metrics = cover.register(
        ...     "runs/demo",
        ...     fixed=slices + "images/mni_z100.png",
        ...     moving=slices + "images/mni_z108.png",
        ...     moving_labels=slices + "labels/mni_z108.png",
        ...     out="runs/reg",
        ... )
        >>> metrics["field"]["shape"], metrics["files"][:3]
        ([2, 32, 32], ['field.npy', 'warped_moving.png', 'warped_moving_labels.png'])
    """
    values = {
        "checkpoint": str(checkpoint),
        "fixed": str(fixed),
        "moving": str(moving),
        "out": str(out),
        "moving_labels": None if moving_labels is None else str(moving_labels),
        "fixed_labels": None if fixed_labels is None else str(fixed_labels),
        "affine": affine,
        "refine_steps": refine_steps,
        "device": device,
        **options,
    }
    return run_registration(resolve_register_config(values))


def run_registration(config: RegisterConfig) -> dict[str, Any]:
    """Register with a resolved config: load, align, refine, write (see :func:`register`).

    Args:
        config: The validated settings.

    Returns:
        The content of ``metrics.json`` (see :func:`register`).
    """
    from cover.downstream.outputs import prepare_output
    from cover.engine.distributed import resolve_device

    tic = time.monotonic()
    device = resolve_device(config.device)
    model, metadata, checkpoint_file = load_vector_model(config.checkpoint, device)
    pair = read_pair(config.fixed, config.moving, metadata)
    read_labels(pair, config.moving_labels, config.fixed_labels)
    out_dir = prepare_output(config.out, config.overwrite, "register")
    save_yaml(config, out_dir / "config.yaml")

    # Network grid: squeeze, resample to the checkpoint spacing, align, refine, back to the fixed grid.
    fixed_t = pair.on_network_grid(pair.fixed_image, device)
    moving_t = pair.on_network_grid(pair.moving_image, device)
    grid = working_grid(pair, tuple(fixed_t.shape[2:]), metadata)
    fixed_w, moving_w = resize_linear(fixed_t, grid.work), resize_linear(moving_t, grid.work)
    aligned = align(
        model, fixed_w, moving_w, int(metadata.get("divisor", 16)), _affine_steps(config), config.refine_kernel
    )
    phi, refine_losses = _refine_with(config, fixed_w, moving_w, aligned.phi)
    phi = resize_field(phi, grid.size) if grid.work != grid.size else phi

    files = write_field(field_in_record_axes(phi[0].cpu().numpy(), pair), pair.fixed, out_dir)
    files.append(write_warped_moving(phi, pair, out_dir))
    metrics = {
        "checkpoint": str(checkpoint_file),
        "fixed": str(pair.fixed.path),
        "moving": str(pair.moving.path),
        "spatial_dims": int(metadata["spatial_dims"]),
        "field": _field_description(out_dir / files[0]),
        "preprocessing": _preprocessing(pair, grid, aligned.pads),
        "affine": _affine_description(aligned),
        "refine_steps": config.refine_steps,
        "refine_loss_first_last": [refine_losses[0], refine_losses[-1]] if refine_losses else None,
    }
    scores, written = _score_labels_and_draw(phi, fixed_t, moving_t, pair, out_dir)
    metrics.update(scores)
    files += [*written, "overlay.png", "metrics.json", "config.yaml"]
    metrics["files"] = files
    metrics["seconds"] = round(time.monotonic() - tic, 2)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
    return metrics


def _score_labels_and_draw(
    phi: torch.Tensor, fixed: torch.Tensor, moving: torch.Tensor, pair: RegistrationPair, out: Path
) -> tuple[dict[str, Any], list[str]]:
    """Score the field, warp and write the labels (Dice when both maps are given), draw ``overlay.png``.

    Args:
        phi: ``(1, ndim, *S)`` field on the fixed image's network grid.
        fixed: ``(1, C, *S)`` normalised fixed image.
        moving: ``(1, C, *S)`` normalised moving image in the fixed grid.
        pair: The images and label maps.
        out: Output folder.

    Returns:
        ``(metrics, written)``: :func:`_quality`'s entries and the Dice entries (or a note why
        there are none), and the warped labels' file name when there are moving labels.
    """
    from cover.downstream.figures import is_ras

    warped = warp(moving, phi)[0].cpu().numpy()
    phi_np = phi[0].cpu().numpy()
    jacobian = field_jacobian_determinant(phi)[0].cpu().numpy()
    metrics: dict[str, Any] = _quality(fixed, moving, warped, phi_np, jacobian)
    files, shown = [], None
    if pair.moving_labels is not None:
        warped_labels, name = write_warped_labels(phi, pair, out)
        files.append(name)
        if pair.fixed_labels is not None:
            metrics.update(dice_before_after(pair, warped_labels))
            shown = (pair.placement.to_network(pair.fixed_labels)[0], warped_labels)
    elif pair.fixed_labels is not None:
        metrics["dice_note"] = "Dice needs --moving-labels as well as --fixed-labels"
    fixed_np, moving_np = fixed[0, 0].cpu().numpy(), moving[0, 0].cpu().numpy()
    ras = is_ras(pair.fixed)
    plot_registration(fixed_np, moving_np, warped[0], phi_np, jacobian, out / "overlay.png", labels=shown, ras=ras)
    return metrics, files


__all__ = [
    "Alignment",
    "RegisterConfig",
    "RegistrationPair",
    "WorkingGrid",
    "align",
    "dice_per_label",
    "load_vector_model",
    "network_field",
    "read_labels",
    "read_pair",
    "refine",
    "register",
    "resolve_register_config",
    "run_registration",
    "working_grid",
]
