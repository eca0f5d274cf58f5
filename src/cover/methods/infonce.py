"""The NT-Xent / InfoNCE loss shared by the binary contrastive baselines (DESIGN §4).

Given ``M`` positive pairs ``(z_a[i], z_b[i])``, every one of the ``2M`` embeddings is an anchor
whose positive is its partner and whose negatives are the ``2M - 2`` other embeddings (of both
views). With cosine similarities ``s`` and temperature ``t``::

    l(i) = -log( exp(s(i, partner(i)) / t) / sum_{j != i} exp(s(i, j) / t) )

and the loss is the mean of ``l`` over the valid anchors. This is SimCLR's NT-Xent; applied to
sampled pixels it is the pixel-level InfoNCE of the DenseCL / PixPro / vox2vec family.

Written with a ``2M x 2M`` similarity matrix and ``log_softmax`` (numerically stable, memory
``O(M^2)``); MONAI's ``ContrastiveLoss`` computes the same value for unweighted inputs but
builds an ``O(M^2 D)`` tensor and has no way to drop invalid pairs.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812


def nt_xent(
    z_a: torch.Tensor, z_b: torch.Tensor, temperature: float, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss of ``M`` positive pairs and the accuracy of finding each partner.

    Args:
        z_a: ``(M, D)`` embeddings of the first member of each pair (normalised here).
        z_b: ``(M, D)`` embeddings of the second member.
        temperature: Softmax temperature ``t``.
        weights: Optional ``(M,)`` 0/1 validity of each pair. Invalid pairs are neither anchors
            nor negatives.

    Returns:
        ``(loss, accuracy)`` scalars: the mean NT-Xent over valid anchors, and the fraction of
        valid anchors whose most similar other embedding is their partner.
    """
    count = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    logits = z @ z.T / temperature  # (2M, 2M)
    valid = torch.ones(count, device=z.device) if weights is None else weights.float().to(z.device)
    valid = torch.cat([valid, valid]) > 0
    blocked = torch.eye(2 * count, dtype=torch.bool, device=z.device) | ~valid.unsqueeze(0)
    logits = logits.masked_fill(blocked, -1e9)  # finite, so an all-invalid batch gives 0, not NaN
    partner = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(z.device)
    log_prob = torch.log_softmax(logits, dim=1)
    per_anchor = -log_prob.gather(1, partner.unsqueeze(1)).squeeze(1)
    anchors = valid.float()
    denominator = anchors.sum().clamp(min=1.0)
    loss = (per_anchor * anchors).sum() / denominator
    hits = (logits.argmax(dim=1) == partner).float()
    accuracy = (hits * anchors).sum() / denominator
    return loss, accuracy.detach()
