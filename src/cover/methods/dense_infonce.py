"""Dense (pixel-level) binary contrastive learning: the DenseCL / PixPro / vox2vec family (docs/method.md §9).

For a batch of SeVR view pairs, ``N`` pixels ``p`` are sampled per image where the valid mask
of view b is 1. The feature of view b at ``p`` and the feature of view a at its known partner
``p + phi_gt(p)`` (read (bi/tri)linearly with :func:`cover.geometry.sample_at`) form a positive
pair; every other sampled pixel of either view, in any image of the batch, is a negative (under
DDP, in any image of the global batch: the embeddings are gathered across processes). Each
sampled feature goes through a pointwise MLP projector (two 1x1 convolutions with a ReLU,
applied to the sampled vectors) and the pairs are scored with :class:`cover.losses.infonce.DenseInfoNCELoss`.

Negatives include neighbouring pixels of the same tissue, which is exactly the "binary"
behaviour COVER argues over-disperses pixel features.

Pixel sampling is drawn from a generator seeded by a step counter stored in the head's state
(``head.step``), so a resumed run draws the same pixels as an uninterrupted one. Under DDP each
process draws the scores of the whole global batch and keeps its own images' rows, so the
pixels drawn for an image do not depend on the number of processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError
from cover.geometry import sample_at
from cover.losses.infonce import DenseInfoNCELoss, process_group_size
from cover.methods.base import PretrainMethod
from cover.methods.registry import register_method
from cover.views import ViewPair

SAMPLING_SEED = 0x5A3D1E


def projector(in_channels: int, hidden: int, out: int) -> nn.Sequential:
    """Pointwise MLP (a 1x1 convolution stack) acting on ``(..., in_channels)`` vectors."""
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def sample_valid_pixels(
    mask: torch.Tensor, count: int, generator: torch.Generator | None, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Draw up to ``count`` distinct pixels per image where ``mask`` is 1.

    Args:
        mask: ``(B, 1, *S)`` 0/1 validity.
        count: Pixels per image ``N`` (capped at the number of pixels).
        generator: Random generator on ``mask.device``.
        rank: This process's rank; its images are rows ``rank * B ... (rank + 1) * B - 1`` of
            the global batch.
        world_size: Number of processes sharing the global batch of ``world_size * B`` images.

    Returns:
        ``(B, N)`` flat indices; when an image has fewer than ``N`` valid pixels the remaining
        indices point at invalid pixels (check ``mask`` at them).
    """
    flat = mask.flatten(1)
    count = min(count, flat.shape[1])
    scores = torch.rand((world_size * flat.shape[0], flat.shape[1]), generator=generator, device=mask.device)
    scores = scores[rank * flat.shape[0] : (rank + 1) * flat.shape[0]]
    scores = torch.where(flat > 0, scores, scores - 2.0)  # valid pixels always rank first
    return scores.topk(count, dim=1).indices


def flat_to_coords(indices: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Voxel coordinates of flat indices.

    Args:
        indices: ``(B, N)`` flat indices into a grid of size ``spatial``.
        spatial: Grid size, length ``ndim``.

    Returns:
        ``(B, ndim, N)`` float coordinates in array axis order.
    """
    coords = []
    remainder = indices
    for size in reversed(spatial):
        coords.append(remainder % size)
        remainder = remainder // size
    return torch.stack(coords[::-1], dim=1).float()


def features_at(features: torch.Tensor, coords: torch.Tensor, full_size: tuple[int, ...]) -> torch.Tensor:
    """Read a pyramid level at full-resolution voxel coordinates.

    A full-resolution voxel ``p`` sits at ``(p + 0.5) / f - 0.5`` on a level down-sampled by
    ``f`` per axis (voxel-centre alignment of the U-Net's pooling and ``align_corners=False``
    up-sampling); at full resolution this is ``p`` itself. Coordinates up to half a coarse voxel
    outside the level (full-resolution border voxels) read the border value, as the U-Net's
    ``align_corners=False`` up-sampling does.

    Args:
        features: ``(B, C, *S_l)`` one level.
        coords: ``(B, ndim, N)`` full-resolution coordinates.
        full_size: Full-resolution spatial size.

    Returns:
        ``(B, N, C)`` features, (bi/tri)linear, border values outside.
    """
    ndim = coords.shape[1]
    factor = torch.tensor(
        [f / s for f, s in zip(full_size, features.shape[2:], strict=True)], device=coords.device
    ).view(1, ndim, 1)
    level_coords = (coords + 0.5) / factor - 0.5
    grid = level_coords.reshape(*level_coords.shape, *([1] * (ndim - 1)))  # (B, ndim, N, 1[, 1])
    values = sample_at(features, grid.to(features.dtype), padding="border")  # (B, C, N, 1[, 1])
    return values.flatten(2).transpose(1, 2)


class DenseContrastHead(nn.Module):
    """Projectors of the contrasted pyramid levels and the pixel-sampling step counter.

    Args:
        channels: Feature channels of each contrasted level.
        hidden_dim: Hidden width of the projector.
        proj_dim: Embedding width.
    """

    def __init__(self, channels: tuple[int, ...], hidden_dim: int, proj_dim: int) -> None:
        super().__init__()
        self.projectors = nn.ModuleList(projector(c, hidden_dim, proj_dim) for c in channels)
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))


class DenseInfoNCEMethod(PretrainMethod):
    """Backbone + pointwise projector trained with pixel-level InfoNCE on corresponding pixels.

    Args:
        backbone: Pyramid-returning backbone shared by both views.
        temperature: InfoNCE temperature.
        num_pixels: Pixels sampled per image ``N``.
        levels: Number of pyramid levels contrasted, finest first (1 = full resolution only;
            2 adds the half-resolution level; the loss is their mean).
        hidden_dim: Projector hidden width.
        proj_dim: Embedding width.
    """

    name = "dense-infonce"
    logged = ("loss", "loss_nce", "acc_pos")

    def __init__(
        self,
        backbone: nn.Module,
        temperature: float = 0.2,
        num_pixels: int = 256,
        levels: int = 1,
        hidden_dim: int = 256,
        proj_dim: int = 128,
    ) -> None:
        super().__init__(backbone)
        pyramid = tuple(backbone.pyramid_channels)
        if not 1 <= levels <= len(pyramid):
            raise ConfigError(f"method_options.levels: {levels} must be in 1..{len(pyramid)}")
        if temperature <= 0:
            raise ConfigError(f"method_options.temperature: {temperature} must be positive")
        if num_pixels < 1:
            raise ConfigError(f"method_options.num_pixels: {num_pixels} must be at least 1")
        self.levels = levels
        self.temperature = temperature
        self.infonce = DenseInfoNCELoss(temperature)
        self.num_pixels = num_pixels
        self.head = DenseContrastHead(pyramid[::-1][:levels], hidden_dim, proj_dim)

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(SAMPLING_SEED + int(self.head.step))
        if self.training:
            self.head.step += 1
        return generator

    def forward(self, views: ViewPair) -> dict[str, torch.Tensor]:
        """Pixel-level InfoNCE for a batch of view pairs.

        Args:
            views: ``B`` view pairs with ground truth.

        Returns:
            ``{"loss", "loss_nce", "acc_pos"}``: the loss, the same value under its own name, and
            the fraction of sampled pixels whose nearest embedding is their partner.
        """
        pyramid_a, pyramid_b = self.encode_pair(views)
        size = tuple(views.view_b.shape[2:])
        gather = self.training  # negatives (and the pixel draw) of the global batch under DDP
        rank, world = process_group_size() if gather else (0, 1)
        generator = self._generator(views.mask.device)
        indices = sample_valid_pixels(views.mask, self.num_pixels, generator, rank, world)
        valid = views.mask.flatten(1).gather(1, indices).flatten()  # (B*N,)
        coords_b = flat_to_coords(indices, size)  # (B, ndim, N)
        phi = views.phi_gt.flatten(2).gather(2, indices.unsqueeze(1).expand(-1, coords_b.shape[1], -1))
        coords_a = coords_b + phi
        z_b, z_a = [], []
        for level, proj in enumerate(self.head.projectors):
            feats_b = features_at(pyramid_b[-1 - level], coords_b, size).float()
            feats_a = features_at(pyramid_a[-1 - level], coords_a, size).float()
            z_b.append(proj(feats_b.flatten(0, 1)))
            z_a.append(proj(feats_a.flatten(0, 1)))
        loss, accuracy = self.infonce(z_b, z_a, valid, gather=gather)
        return {"loss": loss, "loss_nce": loss.detach(), "acc_pos": accuracy}


@register_method("dense-infonce")
def build_dense_infonce(backbone: nn.Module, model: Any, **options: Any) -> DenseInfoNCEMethod:
    """Registry factory for :class:`DenseInfoNCEMethod`; ``options`` are its keyword arguments."""
    allowed = ("temperature", "num_pixels", "levels", "hidden_dim", "proj_dim")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown method_options {unknown} for dense-infonce (allowed: {', '.join(allowed)})")
    return DenseInfoNCEMethod(backbone, **options)
