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
in :mod:`cover.registration.fit`.

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
    tiles = max(2, min(f2.shape) // 8)
    rows, cols = np.indices(f2.shape)
    board = ((rows * tiles // f2.shape[0] + cols * tiles // f2.shape[1]) % 2).astype(bool)
    checker = np.where(board, f2, w2)
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
    note = "radiological: patient's right on the left" if ras else "rows = array axis 0, columns = axis 1"
    note += "; middle slice along the last axis" if fixed.ndim == 3 else ""
    if labels is not None:
        note += "; contours: fixed labels yellow, warped labels red"
    fig.suptitle(f"cover register ({note}; field hue = direction, saturation = length)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -------------------------------------------------------------------------- API


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
    matrix = translation = None
    moving_in = moving
    if config.affine:
        matrix, translation = fit_affine(fixed, moving, config.affine_steps, kernel=config.refine_kernel)
        moving_in = warp(moving, affine_field(matrix[None], translation[None], fixed.shape[2:]))
    fixed_p, pads = pad_to_multiple(fixed, divisor)
    moving_p, _ = pad_to_multiple(moving_in, divisor)
    with torch.no_grad():
        phi = crop_padding(model.predict_field(moving_p, fixed_p), pads)
    if matrix is not None:
        phi = affine_then(matrix, translation, phi)
    losses: list[float] = []
    if config.refine_steps > 0:
        phi, losses = refine_field(
            fixed,
            moving,
            phi,
            config.refine_steps,
            lr=config.refine_lr,
            kernel=config.refine_kernel,
            smoothness=config.refine_smoothness,
            grid=config.refine_grid,
        )
    return phi, matrix, translation, pads, losses


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
    from cover.data.presets import normalize
    from cover.downstream.figures import is_ras
    from cover.downstream.loading import read_label_map, resolve_preset
    from cover.downstream.outputs import prepare_output
    from cover.engine.distributed import resolve_device

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
    config = resolve_register_config(values)
    tic = time.monotonic()
    torch_device = resolve_device(config.device)
    model, metadata, checkpoint_file = load_vector_model(config.checkpoint, torch_device)
    ndim = int(metadata["spatial_dims"])
    in_channels = int(metadata.get("in_channels", 1))
    fixed_rec = read_image(config.fixed, channels=in_channels > 1)
    moving_rec = read_image(config.moving, channels=in_channels > 1)
    for record in (fixed_rec, moving_rec):
        if record.channels != in_channels:
            raise DataError(f"{record.path}: has {record.channels} channels; the checkpoint expects {in_channels}")
    place_f = placement_for(fixed_rec, ndim)
    placement_for(moving_rec, ndim)

    # Intensities: the checkpoint's preset (per file from its modality when it used "auto").
    preset = (metadata.get("data") or {}).get("preset")
    presets = {}
    normalised = {}
    for role, record in (("fixed", fixed_rec), ("moving", moving_rec)):
        chosen = resolve_preset(preset, record)
        presets[role] = chosen
        normalised[role] = normalize(record.array, chosen)
    moving_raw = to_fixed_grid(moving_rec.array, moving_rec, fixed_rec)
    moving_norm = to_fixed_grid(normalised["moving"], moving_rec, fixed_rec)
    labels_moving = labels_fixed = None
    if config.moving_labels:
        values_m = read_label_map(config.moving_labels, moving_rec)[None].astype(np.float32)
        labels_moving = to_fixed_grid(values_m, moving_rec, fixed_rec, mode="nearest")
    if config.fixed_labels:
        labels_fixed = read_label_map(config.fixed_labels, fixed_rec)[None].astype(np.float32)
    out_dir = prepare_output(config.out, config.overwrite, "register")
    save_yaml(config, out_dir / "config.yaml")

    # Network grid: squeeze, resample to the checkpoint spacing, pad.
    fixed_t = torch.from_numpy(place_f.to_network(normalised["fixed"]))[None].float().to(torch_device)
    moving_t = torch.from_numpy(place_f.to_network(moving_norm))[None].float().to(torch_device)
    size = tuple(fixed_t.shape[2:])
    spacing = place_f.spacing(fixed_rec)
    target = target_spacing(metadata, ndim)
    physical = fixed_rec.format in GEOMETRY_FORMATS
    work = working_size(size, spacing, target, physical)
    fixed_w, moving_w = resize_linear(fixed_t, work), resize_linear(moving_t, work)

    phi, matrix, translation, pads, refine_losses = network_field(
        model, fixed_w, moving_w, config, int(metadata.get("divisor", 16))
    )

    # Back to the fixed image's grid.
    phi = resize_field(phi, size) if work != size else phi
    warped_norm = warp(moving_t, phi)[0].cpu().numpy()
    phi_np = phi[0].cpu().numpy()
    jacobian = field_jacobian_determinant(phi)[0].cpu().numpy()
    moving_raw_t = torch.from_numpy(place_f.to_network(moving_raw))[None].float().to(torch_device)
    warped_raw = place_f.to_record(warp(moving_raw_t, phi)[0].cpu().numpy())
    field_record = np.zeros((fixed_rec.spatial_dims, *size), dtype=np.float32)
    axes = [a for a in range(fixed_rec.spatial_dims) if a != place_f.squeeze_axis]
    field_record[axes] = phi_np
    field_record = place_f.to_record(field_record)

    files = write_field(field_record, fixed_rec, out_dir)
    name = _output_name("warped_moving", fixed_rec)
    write_like(_fit_format(warped_raw, fixed_rec, labels=False), fixed_rec, out_dir / name)
    files.append(name)
    metrics: dict[str, Any] = {
        "checkpoint": str(checkpoint_file),
        "fixed": str(fixed_rec.path),
        "moving": str(moving_rec.path),
        "spatial_dims": ndim,
        "field": {
            "file": files[0],
            "shape": list(np.load(out_dir / files[0], mmap_mode="r").shape),
            "channels": "displacement along array axis k of the fixed image file as stored (its own voxel "
            "order; (rows, cols) for plain 2D images)",
            "units": "voxels of the fixed image's grid",
            "meaning": "moving content for fixed voxel p is at fixed-grid coordinate p + phi(p)",
        },
        "preprocessing": {
            "preset": presets,
            "fixed_size": list(size),
            "fixed_spacing": list(spacing),
            "checkpoint_spacing": list(target) if target else None,
            "spacing_is_physical": physical,
            "working_size": list(work),
            "padding": [list(p) for p in pads],
            "moving_resampled_to_fixed_grid": not same_grid(fixed_rec, moving_rec),
        },
        "affine": None
        if matrix is None
        else {
            "matrix": matrix.cpu().tolist(),
            "translation_voxels": translation.cpu().tolist(),
            "about": "grid centre",
        },
        "refine_steps": config.refine_steps,
        "refine_loss_first_last": [refine_losses[0], refine_losses[-1]] if refine_losses else None,
        "nonpositive_jacobian_percent": float(100.0 * (jacobian <= 0).mean()),
        "jacobian_min": float(jacobian.min()),
        "mean_displacement_voxels": float(np.linalg.norm(phi_np, axis=0).mean()),
        "correlation_before": correlation(fixed_t[0].cpu().numpy(), moving_t[0].cpu().numpy()),
        "correlation_after": correlation(fixed_t[0].cpu().numpy(), warped_norm),
    }
    warped_labels = None
    if labels_moving is not None:
        labels_t = torch.from_numpy(place_f.to_network(labels_moving))[None].float().to(torch_device)
        warped_labels = np.rint(warp(labels_t, phi, mode="nearest")[0, 0].cpu().numpy()).astype(np.int64)
        name = _output_name("warped_moving_labels", fixed_rec)
        write_like(
            _fit_format(place_f.to_record(warped_labels[None]), fixed_rec, labels=True), fixed_rec, out_dir / name
        )
        files.append(name)
        if labels_fixed is not None:
            before = np.rint(place_f.to_network(labels_moving)[0]).astype(np.int64)
            reference = np.rint(place_f.to_network(labels_fixed)[0]).astype(np.int64)
            present = sorted(int(k) for k in set(np.unique(reference)) | set(np.unique(before)) if k != 0)
            metrics["dice_before"] = dice_per_label(before, reference, present)
            metrics["dice_after"] = dice_per_label(warped_labels, reference, present)
            for key in ("before", "after"):
                metrics[f"mean_dice_{key}"] = mean_score(metrics[f"dice_{key}"])
    elif labels_fixed is not None:
        metrics["dice_note"] = "Dice needs --moving-labels as well as --fixed-labels"
    plot_registration(
        fixed_t[0, 0].cpu().numpy(),
        moving_t[0, 0].cpu().numpy(),
        warped_norm[0],
        phi_np,
        jacobian,
        out_dir / "overlay.png",
        ras=is_ras(fixed_rec),
        labels=None
        if warped_labels is None or labels_fixed is None
        else (place_f.to_network(labels_fixed)[0], warped_labels),
    )
    files += ["overlay.png", "metrics.json", "config.yaml"]
    metrics["files"] = files
    metrics["seconds"] = round(time.monotonic() - tic, 2)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
    return metrics


__all__ = [
    "RegisterConfig",
    "dice_per_label",
    "load_vector_model",
    "network_field",
    "register",
    "resolve_register_config",
]
