"""Image-level binary contrastive learning: SimCLR on the pooled bottleneck (docs/method.md §9).

The two SeVR views of each image are a positive pair; the views of the other images in the
batch are negatives (under DDP, of the whole global batch: the embeddings are gathered across
processes). Each view is summarised by global average pooling of the coarsest
pyramid level (the U-Net bottleneck ``F^0``) and an MLP projector, and the pairs are scored
with NT-Xent (:class:`cover.losses.infonce.NTXentLoss`). Only the encoder learns from this loss;
the decoder keeps its initialisation, as in image-level pretraining of segmentation networks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError
from cover.losses.infonce import NTXentLoss, process_group_size
from cover.methods.base import PretrainMethod
from cover.methods.registry import register_method
from cover.views import ViewPair


class SimCLRMethod(PretrainMethod):
    """Backbone + MLP projector on pooled bottleneck features, trained with NT-Xent.

    Args:
        backbone: Pyramid-returning backbone shared by both views.
        temperature: NT-Xent temperature (0.1, SimCLR's best setting).
        hidden_dim: Projector hidden width.
        proj_dim: Embedding width.
    """

    name = "simclr"
    logged = ("loss", "loss_nce", "acc_pos")

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, hidden_dim: int = 512, proj_dim: int = 128):
        super().__init__(backbone)
        if temperature <= 0:
            raise ConfigError(f"method_options.temperature: {temperature} must be positive")
        self.temperature = temperature
        self.nt_xent = NTXentLoss(temperature)
        channels = backbone.pyramid_channels[0]
        self.head = nn.Sequential(
            nn.Linear(channels, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, proj_dim)
        )

    def embed(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Project pooled bottleneck features.

        Args:
            bottleneck: ``(B, C, *S_0)`` coarsest pyramid level.

        Returns:
            ``(B, proj_dim)`` embeddings (not normalised).
        """
        return self.head(bottleneck.float().flatten(2).mean(dim=2))

    def forward(self, views: ViewPair) -> dict[str, torch.Tensor]:
        """NT-Xent over the batch's view pairs.

        Args:
            views: ``B`` view pairs (``phi_gt`` and ``mask`` are not used).

        Returns:
            ``{"loss", "loss_nce", "acc_pos"}``: the loss, the same value under its own name, and
            the fraction of views whose nearest embedding is the other view of their image.
        """
        batch = views.view_a.shape[0]
        gather = self.training  # negatives from every process under DDP
        if batch * (process_group_size()[1] if gather else 1) < 2:
            raise ConfigError(
                "batch_size: simclr needs at least 2 images per batch (its negatives are the other images)"
            )
        bottleneck = self.backbone(torch.cat([views.view_a, views.view_b]))[0]
        z = self.embed(bottleneck)
        loss, accuracy = self.nt_xent(z[:batch], z[batch:], gather=gather)
        return {"loss": loss, "loss_nce": loss.detach(), "acc_pos": accuracy}


@register_method("simclr")
def build_simclr(backbone: nn.Module, model: Any, **options: Any) -> SimCLRMethod:
    """Registry factory for :class:`SimCLRMethod`; ``options`` are its keyword arguments."""
    allowed = ("temperature", "hidden_dim", "proj_dim")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown method_options {unknown} for simclr (allowed: {', '.join(allowed)})")
    return SimCLRMethod(backbone, **options)
