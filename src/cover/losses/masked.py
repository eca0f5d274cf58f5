"""Masked per-voxel losses of the pretraining methods (docs/method.md §7), as functions and modules.

The functions hold the arithmetic; the modules (:class:`VectorLoss`, :class:`ConsistencyLoss`,
:class:`VarianceCovarianceLoss`) are what the methods own and call. They have no parameters or
buffers, so they add nothing to a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from cover.losses.precision import full_precision


def masked_mean(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean of ``values`` over the voxels where ``mask`` is 1.

    Args:
        values: ``(B, 1, *S)`` per-voxel values.
        mask: ``(B, 1, *S)`` 0/1 weights.
        eps: Guard against an empty mask.

    Returns:
        Scalar tensor.
    """
    return (values * mask).sum() / mask.sum().clamp(min=eps)


def vector_loss(phi: torch.Tensor, phi_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_vec``: masked mean L1 norm of the displacement error.

    Args:
        phi: ``(B, ndim, *S)`` predicted field.
        phi_gt: ``(B, ndim, *S)`` ground-truth field.
        mask: ``(B, 1, *S)`` valid voxels.

    Returns:
        ``sum_p mask(p) ||phi(p) - phi_gt(p)||_1 / sum_p mask(p)``.
    """
    error = (phi.float() - phi_gt.float()).abs().sum(dim=1, keepdim=True)
    return masked_mean(error, mask)


def endpoint_error(phi: torch.Tensor, phi_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean endpoint error inside the mask (an evaluation metric, in voxels).

    Args:
        phi: ``(B, ndim, *S)`` predicted field.
        phi_gt: ``(B, ndim, *S)`` ground-truth field.
        mask: ``(B, 1, *S)`` valid voxels.

    Returns:
        Scalar tensor.
    """
    error = torch.linalg.vector_norm(phi.float() - phi_gt.float(), dim=1, keepdim=True)
    return masked_mean(error, mask)


def consistency_loss(feat_b: torch.Tensor, feat_a_aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_con``: one minus the masked mean cosine similarity of corresponding features.

    Args:
        feat_b: ``(B, C, *S)`` view b's finest features.
        feat_a_aligned: ``(B, C, *S)`` view a's finest features warped by ``phi_gt``.
        mask: ``(B, 1, *S)`` valid voxels.

    Returns:
        Scalar tensor.
    """
    cosine = F.cosine_similarity(feat_b.float(), feat_a_aligned.float(), dim=1, eps=1e-6).unsqueeze(1)
    return 1.0 - masked_mean(cosine, mask)


def centre_features(features: torch.Tensor) -> torch.Tensor:
    """Subtract each image's per-channel spatial mean (removes a direction shared by all pixels).

    Args:
        features: ``(B, C, *S)``.

    Returns:
        ``(B, C, *S)`` float32 with zero spatial mean per image and channel.
    """
    features = features.float()
    return features - features.mean(dim=tuple(range(2, features.dim())), keepdim=True)


def variance_covariance_loss(
    features: torch.Tensor, mask: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg-style variance and covariance terms over the valid pixels of a batch.

    With ``X`` the ``(N, C)`` matrix of the valid pixels' features (all images together) and
    ``K`` its covariance: the variance term is ``mean_c max(0, target_std - sqrt(K_cc + eps))``
    (every channel keeps a spread over pixels), the covariance term ``sum_{c != c'} K_cc'^2 / C``
    (channels decorrelated, so the spread is not along one direction).

    Args:
        features: ``(B, C, *S)``.
        mask: ``(B, 1, *S)`` 0/1, pixels taking part.
        target_std: Hinge target of each channel's standard deviation.
        eps: Numerical guard inside the square root.

    Returns:
        ``(variance term, covariance term)`` scalars.
    """
    channels = features.shape[1]
    flat = features.float().movedim(1, -1).reshape(-1, channels)
    weight = mask.float().movedim(1, -1).reshape(-1, 1)
    count = weight.sum().clamp(min=2.0)
    mean = (flat * weight).sum(dim=0, keepdim=True) / count
    centred = (flat - mean) * weight
    with full_precision(centred):  # under autocast a float16 product of N pixels overflows (N > 65504)
        covariance = centred.T @ centred / (count - 1)
    std = torch.sqrt(torch.diagonal(covariance) + eps)
    variance_term = torch.relu(target_std - std).mean()
    off_diagonal = covariance - torch.diag(torch.diagonal(covariance))
    return variance_term, off_diagonal.pow(2).sum() / channels


def relative_vector_loss(phi: torch.Tensor, phi_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_vec`` divided by the zero field's ``L_vec`` (a unitless error, 1 = no better than zero).

    Balances the vector loss (in voxels: about 1 at small crops, up to about 100 at the paper's
    384 px crops) against the consistency loss (between 0 and 2). The denominator is a
    constant of the batch (no gradient).

    Args:
        phi: ``(B, ndim, *S)`` predicted field.
        phi_gt: ``(B, ndim, *S)`` ground-truth field.
        mask: ``(B, 1, *S)`` valid voxels.

    Returns:
        Scalar tensor.
    """
    scale = vector_loss(torch.zeros_like(phi_gt), phi_gt, mask).detach().clamp(min=1e-3)
    return vector_loss(phi, phi_gt, mask) / scale


class VectorLoss(nn.Module):
    """``L_vec`` (:func:`vector_loss`), or its unitless form (:func:`relative_vector_loss`).

    Args:
        relative: Divide by the zero field's ``L_vec`` (1 = no better than predicting zero).
    """

    def __init__(self, relative: bool = False) -> None:
        super().__init__()
        self.relative = relative

    def forward(self, phi: torch.Tensor, phi_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked mean L1 displacement error.

        Args:
            phi: ``(B, ndim, *S)`` predicted field.
            phi_gt: ``(B, ndim, *S)`` ground-truth field.
            mask: ``(B, 1, *S)`` valid voxels.

        Returns:
            Scalar tensor (voxels, or unitless when ``relative``).
        """
        if self.relative:
            return relative_vector_loss(phi, phi_gt, mask)
        return vector_loss(phi, phi_gt, mask)

    def extra_repr(self) -> str:  # noqa: D102 - shown in the module's repr
        return f"relative={self.relative}"


class ConsistencyLoss(nn.Module):
    """``L_con`` (:func:`consistency_loss`): one minus the masked mean cosine similarity."""

    def forward(self, feat_b: torch.Tensor, feat_a_aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Consistency of corresponding features.

        Args:
            feat_b: ``(B, C, *S)`` view b's features.
            feat_a_aligned: ``(B, C, *S)`` view a's features warped onto view b.
            mask: ``(B, 1, *S)`` valid voxels.

        Returns:
            Scalar tensor.
        """
        return consistency_loss(feat_b, feat_a_aligned, mask)


class VarianceCovarianceLoss(nn.Module):
    """VICReg-style variance and covariance terms (:func:`variance_covariance_loss`).

    Args:
        target_std: Hinge target of each channel's standard deviation.
    """

    def __init__(self, target_std: float = 1.0) -> None:
        super().__init__()
        self.target_std = target_std

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms over the valid pixels of a batch.

        Args:
            features: ``(B, C, *S)``.
            mask: ``(B, 1, *S)`` 0/1, pixels taking part.

        Returns:
            ``(variance term, covariance term)`` scalars.
        """
        return variance_covariance_loss(features, mask, self.target_std)
