"""COVER: vector contrastive learning (docs/method.md §5-§7), with named loss recipes (§10).

The paper's objective (recipe ``paper``) is ``L = w_vec * L_vec + w_con * L_con`` with
``L_con = 1 - cos(F_b, warp(F_a, phi_gt))`` on the raw finest decoder features. Measured on
small budgets, that consistency term is minimised by pointing every pixel's feature in one
shared direction (feature collapse; the MoV projection's GroupNorm hides it from ``L_vec``).
The other recipes change how the terms are formed (``docs/method.md`` §10):

* ``paper``: the paper's objective, exactly;
* ``centred``: ``L_con`` on features with each image's per-channel spatial mean removed, so a
  shared direction cannot satisfy it;
* ``projected``: ``L_con`` on the finest level's MoV projection (1x1 conv + GroupNorm) of both
  views instead of the raw features;
* ``predictor``: SimSiam-style, ``L_con = 1 - (cos(h(F_b), sg(F_a')) + cos(h(F_a'), sg(F_b))) / 2``
  with a pointwise predictor ``h`` and stop-gradient ``sg`` (``F_a' = warp(F_a, phi_gt)``);
* ``vicreg``: the paper's ``L_con`` plus VICReg-style variance and covariance terms on the raw
  finest features of both views (:class:`cover.losses.masked.VarianceCovarianceLoss`);
* ``centred-vicreg``: ``centred`` plus the variance and covariance terms;
* ``balanced``: the paper's terms with ``L_vec`` divided by the zero field's ``L_vec`` (unitless,
  about 0-1 like ``L_con``) instead of in voxels.

A recipe is a named set of the keyword options of :class:`CoverMethod`; options given next to
it (``method_options``) override the recipe's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cover.errors import ConfigError
from cover.geometry import warp
from cover.losses.masked import ConsistencyLoss, VarianceCovarianceLoss, VectorLoss, centre_features
from cover.methods.base import PretrainMethod
from cover.methods.registry import register_method
from cover.nn.vpa import VectorPyramidAggregation
from cover.views import ViewPair

#: Named recipes: keyword options of :class:`CoverMethod` (the rest keep their defaults).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "centred": {"con_features": "centred"},
    "projected": {"con_features": "projected"},
    "predictor": {"predictor": True},
    "vicreg": {"var_weight": 1.0, "cov_weight": 0.04},
    "centred-vicreg": {"con_features": "centred", "var_weight": 1.0, "cov_weight": 0.04},
    "balanced": {"vec_norm": "relative"},
}
#: What a recipe sets beyond the loss (``cover pretrain --data``; docs/method.md §8, §10):
#: ``lr_rule`` (``paper``: ``1e-4 * batch / 256``, the authors' rule; else cover's default, see
#: :func:`cover.config.default_lr`), ``init`` (the U-Net's initialisation, :class:`cover.nn.unet.UNet`)
#: and, per dimension, run settings that replace the data defaults. ``paper`` in 2D: the
#: release's run, 100 epochs of ChestX-ray14's 112,120 images at batch 24
#: (``100 * ceil(112120 / 24)`` steps), no warm-up, cosine decay to 0.
RECIPE_SCHEDULES: dict[str, dict[Any, Any]] = {
    "paper": {"lr_rule": "paper", "init": "authors", 2: {"steps": 467_200, "warmup_steps": 0}},
}
#: The recipe of ``cover pretrain --method cover`` when none is named: chosen by measurement
#: (``benchmarks/RESULTS.md``, *COVER loss recipes*); ``paper`` stays available by name.
DEFAULT_RECIPE = "vicreg"
CON_FEATURES = ("raw", "centred", "projected")
VEC_NORMS = ("voxels", "relative")


def predictor_head(spatial_dims: int, channels: int, hidden: int) -> nn.Sequential:
    """Pointwise predictor ``h``: 1x1 conv, GroupNorm (one group), LeakyReLU(0.2), 1x1 conv.

    Args:
        spatial_dims: 2 or 3.
        channels: Feature channels in and out.
        hidden: Hidden channels.

    Returns:
        A module mapping ``(B, channels, *S)`` to ``(B, channels, *S)``.
    """
    conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
    return nn.Sequential(
        conv(channels, hidden, 1), nn.GroupNorm(1, hidden), nn.LeakyReLU(0.2), conv(hidden, channels, 1)
    )


class CoverMethod(PretrainMethod):
    """Backbone + VPA vector head, trained with ``w_vec * L_vec + w_con * L_con`` (+ recipe terms).

    Args:
        backbone: Pyramid-returning backbone shared by both views.
        heads: MoV heads per pyramid level, coarse to fine.
        head_dim: Channels per head ``d``.
        window_radius: MoV window radius ``r``.
        mov_schedule: MoV schedule (``auto``, ``fused``, ``chunked``; :mod:`cover.nn.mov`).
        vec_weight: Weight of the vector loss.
        con_weight: Weight of the consistency loss.
        recipe: Name of the recipe (recorded; the options below carry its meaning).
        con_features: Features compared by ``L_con``: ``raw`` (paper), ``centred`` or
            ``projected``.
        predictor: SimSiam-style predictor and stop-gradient in ``L_con``.
        var_weight: Weight of the variance term on the finest features (0: none).
        cov_weight: Weight of the covariance term on the finest features (0: none).
        vec_norm: ``voxels`` (paper) or ``relative`` (divided by the zero field's ``L_vec``).
    """

    name = "cover"
    logged = ("loss", "loss_vec", "loss_con")

    def __init__(
        self,
        backbone: nn.Module,
        heads: tuple[int, ...] = (4, 4, 4, 1, 1),
        head_dim: int = 8,
        window_radius: int = 2,
        mov_schedule: str = "auto",
        vec_weight: float = 1.0,
        con_weight: float = 1.0,
        recipe: str = "paper",
        con_features: str = "raw",
        predictor: bool = False,
        var_weight: float = 0.0,
        cov_weight: float = 0.0,
        vec_norm: str = "voxels",
    ) -> None:
        super().__init__(backbone)
        self.head = VectorPyramidAggregation(
            backbone.spatial_dims, backbone.pyramid_channels, heads, head_dim, window_radius, mov_schedule
        )
        self.vec_weight = vec_weight
        self.con_weight = con_weight
        self.recipe = recipe
        self.con_features = con_features
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.vec_norm = vec_norm
        self.vector_loss = VectorLoss()
        self.relative_vector_loss = VectorLoss(relative=True)
        self.consistency_loss = ConsistencyLoss()
        self.variance_covariance_loss = VarianceCovarianceLoss()
        finest = backbone.pyramid_channels[-1]
        if con_features == "projected":
            finest = heads[-1] * head_dim
        self.predictor = predictor_head(backbone.spatial_dims, finest, max(finest, 32)) if predictor else None
        if var_weight or cov_weight:
            self.logged = (*self.logged, "loss_var", "loss_cov")

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
            ``{"loss", "loss_vec", "loss_con"}`` scalars (``loss_vec`` always in voxels), plus
            ``loss_var`` and ``loss_cov`` when the recipe has those terms.
        """
        pyramid_a, pyramid_b = self.encode_pair(views)
        phi = self.head(pyramid_a, pyramid_b).float()
        loss_vec = self.vector_loss(phi, views.phi_gt, views.mask)
        if self.con_features == "raw" and self.predictor is None:  # the paper's L_con
            aligned = warp(pyramid_a[-1].float(), views.phi_gt)
            loss_con = self.consistency_loss(pyramid_b[-1], aligned, views.mask)
        else:
            loss_con = self._recipe_consistency(pyramid_a[-1], pyramid_b[-1], views)
        vec_term = loss_vec if self.vec_norm == "voxels" else self.relative_vector_loss(phi, views.phi_gt, views.mask)
        loss = self.vec_weight * vec_term + self.con_weight * loss_con
        losses = {"loss": loss, "loss_vec": loss_vec, "loss_con": loss_con}
        if self.var_weight or self.cov_weight:
            both = torch.cat([pyramid_a[-1], pyramid_b[-1]])
            loss_var, loss_cov = self.variance_covariance_loss(both, torch.ones_like(both[:, :1]))
            losses.update(loss_var=loss_var, loss_cov=loss_cov)
            losses["loss"] = loss + self.var_weight * loss_var + self.cov_weight * loss_cov
        return losses

    def _recipe_consistency(self, finest_a: torch.Tensor, finest_b: torch.Tensor, views: ViewPair) -> torch.Tensor:
        """``L_con`` of the non-paper recipes.

        Args:
            finest_a: ``(B, C, *S)`` view a's finest features.
            finest_b: ``(B, C, *S)`` view b's finest features.
            views: The view pairs (``phi_gt``, ``mask``).

        Returns:
            Scalar tensor.
        """
        if self.con_features == "centred":
            finest_a, finest_b = centre_features(finest_a), centre_features(finest_b)
        aligned = warp(finest_a.float(), views.phi_gt)
        if self.con_features == "projected":
            project = self.head.levels[-1].project
            finest_b, aligned = project(finest_b), project(aligned)
        if self.predictor is None:
            return self.consistency_loss(finest_b, aligned, views.mask)
        forward = self.consistency_loss(self.predictor(finest_b), aligned.detach(), views.mask)
        backward = self.consistency_loss(self.predictor(aligned), finest_b.detach(), views.mask)
        return 0.5 * (forward + backward)


def recipe_options(recipe: str, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of a named recipe, overridden by explicitly given options.

    Args:
        recipe: A name in :data:`RECIPES`.
        options: Explicit options (``con_features``, ``predictor``, ``var_weight``,
            ``cov_weight``, ``vec_norm``).

    Returns:
        The merged options, validated (one-line :class:`ConfigError` otherwise).
    """
    if recipe not in RECIPES:
        raise ConfigError(f"method_options.recipe: {recipe!r} is unknown (allowed: {', '.join(RECIPES)})")
    allowed = ("con_features", "predictor", "var_weight", "cov_weight", "vec_norm")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"method_options: '{unknown[0]}' is not an option of method 'cover' (allowed: recipe, {', '.join(allowed)})"
        )
    merged = {**RECIPES[recipe], **options}
    for key, choices in (("con_features", CON_FEATURES), ("vec_norm", VEC_NORMS)):
        if key in merged and merged[key] not in choices:
            raise ConfigError(f"method_options.{key}: {merged[key]!r} is not allowed (allowed: {', '.join(choices)})")
    for key in ("var_weight", "cov_weight"):
        if key in merged and not float(merged[key]) >= 0:
            raise ConfigError(f"method_options.{key}: {merged[key]!r} must be >= 0")
    return merged


@register_method("cover")
def build_cover(
    backbone: nn.Module,
    model: Any,
    vec_weight: float = 1.0,
    con_weight: float = 1.0,
    recipe: str = DEFAULT_RECIPE,
    **options: Any,
) -> CoverMethod:
    """Registry factory for :class:`CoverMethod` (``recipe`` and its overrides from ``method_options``)."""
    return CoverMethod(
        backbone,
        heads=tuple(model.heads),
        head_dim=model.head_dim,
        window_radius=model.window_radius,
        mov_schedule=model.mov_schedule,
        vec_weight=vec_weight,
        con_weight=con_weight,
        recipe=recipe,
        **recipe_options(recipe, options),
    )
