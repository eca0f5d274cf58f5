"""Training augmentation for fine-tuning, batched in torch on the training device.

Spatial changes (flips, a small affine about the centre through :mod:`cover.geometry`) move
image and label map together: images with linear, labels with nearest interpolation.
Intensity changes (contrast, brightness, noise) touch the image only.
"""

from __future__ import annotations

import torch

from cover.downstream.config import DEFAULT_FLIP_PROB, AugmentConfig
from cover.geometry import affine_field, random_affine_matrices, warp


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor | None, config: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Randomly flip, warp and re-light a batch.

    Flips act along ``config.flip_axes`` (every axis when ``None``), each with probability
    ``config.flip_prob`` (0.5 when ``None``; :func:`cover.finetune` resolves it first).

    Args:
        images: ``(B, C, *spatial)`` float images.
        labels: ``(B, *spatial)`` int64 label maps, or ``None`` (classification).
        config: Augmentation ranges.
        generator: Random generator on the images' device.

    Returns:
        ``(images, labels)`` of the same shapes and dtypes.
    """
    if not config.enabled:
        return images, labels
    batch, ndim, device = images.shape[0], images.dim() - 2, images.device
    labels_f = None if labels is None else labels[:, None].float()
    prob = DEFAULT_FLIP_PROB if config.flip_prob is None else config.flip_prob
    for axis in range(ndim):
        flip = torch.rand(batch, generator=generator, device=device) < prob
        if config.flip_axes is not None and axis not in config.flip_axes:
            continue  # drawn all the same: the other axes' and later draws do not depend on flip_axes
        if flip.any():
            images = torch.where(_per_sample(flip, images), images.flip(axis + 2), images)
            if labels_f is not None:
                labels_f = torch.where(_per_sample(flip, labels_f), labels_f.flip(axis + 2), labels_f)
    if config.rotation_deg > 0 or config.shear_deg > 0 or tuple(config.scale_range) != (1.0, 1.0):
        matrix = random_affine_matrices(
            batch,
            ndim,
            rotation_deg=config.rotation_deg,
            num_rotations=1,
            scale_range=tuple(config.scale_range),
            shear_deg=config.shear_deg,
            generator=generator,
            device=device,
        )
        phi = affine_field(matrix, torch.zeros(batch, ndim, device=device), images.shape[2:])
        images = warp(images, phi)
        if labels_f is not None:
            labels_f = warp(labels_f, phi, mode="nearest")
    images = _intensity(images, config, generator)
    return images, None if labels_f is None else labels_f[:, 0].round().long()


def _per_sample(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flags.view(-1, *([1] * (like.dim() - 1)))


def _intensity(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    batch, device = images.shape[0], images.device
    shape = (batch,) + (1,) * (images.dim() - 1)
    low, high = config.contrast_range
    contrast = low + (high - low) * torch.rand(shape, generator=generator, device=device)
    mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
    images = (images - mean) * contrast + mean
    images = images + config.brightness * torch.randn(shape, generator=generator, device=device)
    sigma = config.noise_std * torch.rand(shape, generator=generator, device=device)
    return images + sigma * torch.randn(images.shape, generator=generator, device=device)
