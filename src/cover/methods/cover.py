"""COVER: vector contrastive learning (docs/method.md §5-§7)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cover.geometry import warp
from cover.methods.base import PretrainMethod
from cover.methods.losses import consistency_loss, vector_loss
from cover.methods.registry import register_method
from cover.nn.vpa import VectorPyramidAggregation
from cover.views import ViewPair


class CoverMethod(PretrainMethod):
    """Backbone + VPA vector head, trained with ``w_vec * L_vec + w_con * L_con``.

    Args:
        backbone: Pyramid-returning backbone shared by both views.
        heads: MoV heads per pyramid level, coarse to fine.
        head_dim: Channels per head ``d``.
        window_radius: MoV window radius ``r``.
        vec_weight: Weight of the vector loss.
        con_weight: Weight of the consistency loss.
    """

    name = "cover"
    logged = ("loss", "loss_vec", "loss_con")

    def __init__(
        self,
        backbone: nn.Module,
        heads: tuple[int, ...] = (4, 4, 4, 1, 1),
        head_dim: int = 8,
        window_radius: int = 2,
        vec_weight: float = 1.0,
        con_weight: float = 1.0,
    ) -> None:
        super().__init__(backbone)
        self.head = VectorPyramidAggregation(
            backbone.spatial_dims, backbone.pyramid_channels, heads, head_dim, window_radius
        )
        self.vec_weight = vec_weight
        self.con_weight = con_weight

    def predict_field(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """Predicted field with ``view_b(p) ≈ view_a(p + phi(p))``.

        Args:
            view_a: ``(B, C, *S)``.
            view_b: ``(B, C, *S)``.

        Returns:
            ``(B, ndim, *S)`` in voxels.
        """
        pyramid_a, pyramid_b = self.encode_pair(ViewPair(view_a, view_b, view_a, view_a))
        return self.head(pyramid_a, pyramid_b).float()

    def forward(self, views: ViewPair) -> dict[str, torch.Tensor]:
        """Vector and consistency losses for a batch of view pairs.

        Args:
            views: ``B`` view pairs with ground truth.

        Returns:
            ``{"loss", "loss_vec", "loss_con"}`` scalars.
        """
        pyramid_a, pyramid_b = self.encode_pair(views)
        phi = self.head(pyramid_a, pyramid_b).float()
        loss_vec = vector_loss(phi, views.phi_gt, views.mask)
        aligned = warp(pyramid_a[-1].float(), views.phi_gt)
        loss_con = consistency_loss(pyramid_b[-1], aligned, views.mask)
        loss = self.vec_weight * loss_vec + self.con_weight * loss_con
        return {"loss": loss, "loss_vec": loss_vec, "loss_con": loss_con}


@register_method("cover")
def build_cover(backbone: nn.Module, model: Any, vec_weight: float = 1.0, con_weight: float = 1.0) -> CoverMethod:
    """Registry factory for :class:`CoverMethod`."""
    return CoverMethod(
        backbone,
        heads=tuple(model.heads),
        head_dim=model.head_dim,
        window_radius=model.window_radius,
        vec_weight=vec_weight,
        con_weight=con_weight,
    )
