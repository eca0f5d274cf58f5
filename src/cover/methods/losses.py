"""Masked losses shared by the pretraining methods (docs/method.md §7)."""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812


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
