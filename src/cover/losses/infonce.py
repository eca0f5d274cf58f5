"""The NT-Xent / InfoNCE loss of the binary contrastive baselines (docs/method.md §9), as functions and modules.

Given ``M`` positive pairs ``(z_a[i], z_b[i])``, every one of the ``2M`` embeddings is an anchor
whose positive is its partner and whose negatives are the ``2M - 2`` other embeddings (of both
views). With cosine similarities ``s`` and temperature ``t``::

    l(i) = -log( exp(s(i, partner(i)) / t) / sum_{j != i} exp(s(i, j) / t) )

and the loss is the mean of ``l`` over the valid anchors. This is SimCLR's NT-Xent; applied to
sampled pixels it is the pixel-level InfoNCE of the DenseCL / PixPro / vox2vec family.

Written with a ``2M x 2M`` similarity matrix and ``log_softmax`` (numerically stable, memory
``O(M^2)``); MONAI's ``ContrastiveLoss`` computes the same value for unweighted inputs but
builds an ``O(M^2 D)`` tensor and has no way to drop invalid pairs.

Under DDP (a joined process group with more than one process) the embeddings of every process
are gathered, so the negatives are those of the whole global batch: each process scores its own
anchors against all ``2 M_global`` embeddings, and its loss is scaled so that the mean of the
processes' losses, and DDP's average of their gradients, equal the one-process loss on the
global batch and its gradient (``tests/methods/test_infonce_distributed.py``).

The methods own :class:`NTXentLoss` (SimCLR: one embedding per image) and
:class:`DenseInfoNCELoss` (dense InfoNCE: one embedding per sampled pixel and pyramid level).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F  # noqa: N812

from cover.losses.precision import full_precision


def process_group_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when none is joined."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; the backward gives each rank the summed gradient of its own rows."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rank, world = process_group_size()
        ctx.rows, ctx.rank = tensor.shape[0], rank
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # Every rank's loss uses every rank's rows, so the gradient of the sum of the ranks'
        # losses with respect to this rank's rows is the sum over ranks of what each sends here.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order (a collective).

    Gradients flow back to the process that computed each row (see :class:`_GatherRows`). With
    no process group, or one process, ``tensor`` itself is returned.

    Args:
        tensor: ``(M, ...)`` this process's rows, the same shape on every process.

    Returns:
        ``(world_size * M, ...)``: rank 0's rows, then rank 1's, ...
    """
    _, world = process_group_size()
    if world == 1:
        return tensor
    if tensor.requires_grad:
        return _GatherRows.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def nt_xent(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    weights: torch.Tensor | None = None,
    gather: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss of ``M`` positive pairs and the accuracy of finding each partner.

    Args:
        z_a: ``(M, D)`` embeddings of the first member of each pair (normalised here).
        z_b: ``(M, D)`` embeddings of the second member.
        temperature: Softmax temperature ``t``.
        weights: Optional ``(M,)`` 0/1 validity of each pair. Invalid pairs are neither anchors
            nor negatives.
        gather: Under DDP, score this process's anchors against the embeddings of every process
            (the global batch's pairs in rank order); a collective, so every process must call
            it. Without a process group it changes nothing.

    Returns:
        ``(loss, accuracy)`` scalars: the mean NT-Xent over valid anchors, and the fraction of
        valid anchors whose most similar other embedding is their partner. Under DDP with
        ``gather`` each process returns its anchors' share scaled by the number of processes,
        so the mean over processes is the global batch's value.
    """
    count = z_a.shape[0]
    local = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2M, D)
    valid = torch.ones(count, device=local.device) if weights is None else weights.float().to(local.device)
    rank, world = process_group_size() if gather else (0, 1)
    if world == 1:
        z, valid_all, total = local, valid, count
    else:
        z = torch.cat([gather_rows(local[:count]), gather_rows(local[count:])])  # (2 W M, D)
        valid_all, total = gather_rows(valid), world * count
    with full_precision(local):  # float32 under autocast: -1e9 below overflows float16
        logits = local @ z.T / temperature  # (2M, 2 W M): this process's anchors against every embedding
    own = torch.cat([torch.arange(count), torch.arange(count) + total]).to(local.device) + rank * count
    valid_columns = torch.cat([valid_all, valid_all]) > 0  # (2 W M,)
    blocked = F.one_hot(own, 2 * total).bool() | ~valid_columns.unsqueeze(0)
    logits = logits.masked_fill(blocked, -1e9)  # finite, so an all-invalid batch gives 0, not NaN
    partner = (own + total) % (2 * total)
    log_prob = torch.log_softmax(logits, dim=1)
    per_anchor = -log_prob.gather(1, partner.unsqueeze(1)).squeeze(1)
    anchors = (torch.cat([valid, valid]) > 0).float()
    # The global batch's number of valid anchors; each process's sum is scaled by the number of
    # processes because DDP and the logged value average over them.
    denominator = valid_columns.sum().float().clamp(min=1.0) / world
    loss = (per_anchor * anchors).sum() / denominator
    hits = (logits.argmax(dim=1) == partner).float()
    accuracy = (hits * anchors).sum() / denominator
    return loss, accuracy.detach()


class NTXentLoss(nn.Module):
    """:func:`nt_xent` with its temperature: ``M`` positive pairs, the other embeddings as negatives.

    Args:
        temperature: Softmax temperature ``t``.
    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor, weights: torch.Tensor | None = None, gather: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NT-Xent loss and partner accuracy.

        Args:
            z_a: ``(M, D)`` embeddings of the first member of each pair.
            z_b: ``(M, D)`` embeddings of the second member.
            weights: Optional ``(M,)`` 0/1 validity of each pair.
            gather: Negatives of every process under DDP (see :func:`nt_xent`).

        Returns:
            ``(loss, accuracy)`` scalars.
        """
        return nt_xent(z_a, z_b, self.temperature, weights, gather=gather)

    def extra_repr(self) -> str:  # noqa: D102 - shown in the module's repr
        return f"temperature={self.temperature}"


class DenseInfoNCELoss(NTXentLoss):
    """Pixel-level InfoNCE: NT-Xent over corresponding pixels, averaged over pyramid levels.

    Each level contributes the NT-Xent of its ``M`` sampled pixel pairs (the same pixels and
    validity at every level); loss and accuracy are the means over levels.
    """

    def forward(  # type: ignore[override]
        self,
        z_b: list[torch.Tensor],
        z_a: list[torch.Tensor],
        valid: torch.Tensor,
        gather: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean NT-Xent over levels.

        Args:
            z_b: Per level, ``(M, D)`` embeddings of the sampled pixels of view b.
            z_a: Per level, ``(M, D)`` embeddings of their partners in view a.
            valid: ``(M,)`` 0/1 validity of each pair.
            gather: Negatives of every process under DDP (see :func:`nt_xent`).

        Returns:
            ``(loss, accuracy)`` scalars.
        """
        losses, accuracies = [], []
        for level_b, level_a in zip(z_b, z_a, strict=True):
            loss, accuracy = nt_xent(level_b, level_a, self.temperature, valid, gather=gather)
            losses.append(loss)
            accuracies.append(accuracy)
        return torch.stack(losses).mean(), torch.stack(accuracies).mean()
