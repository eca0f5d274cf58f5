"""The contract every pretraining method follows."""

from __future__ import annotations

import torch
from torch import nn

from cover.views import ViewPair


class PretrainMethod(nn.Module):
    """A (backbone, head, loss) triple fed by the shared view generator.

    Subclasses implement :meth:`forward`, returning a dict of scalar tensors whose ``"loss"``
    entry is optimised; the entries named in :attr:`logged` are written to ``log.csv``.

    Attributes:
        name: Registry name.
        logged: Keys of :meth:`forward`'s result that the trainer logs, ``"loss"`` first.

    Args:
        backbone: A pyramid-returning backbone (see :mod:`cover.nn.backbones`).
    """

    name = "base"
    logged: tuple[str, ...] = ("loss",)

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, views: ViewPair) -> dict[str, torch.Tensor]:
        """Losses for one batch of view pairs."""
        raise NotImplementedError

    def encode_pair(self, views: ViewPair) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the shared backbone on both views in one batch.

        Args:
            views: Batch of ``B`` view pairs.

        Returns:
            Pyramids of view a and view b, each a list of ``(B, C_l, *S_l)``.
        """
        batch = views.view_a.shape[0]
        pyramid = self.backbone(torch.cat([views.view_a, views.view_b], dim=0))
        return [f[:batch] for f in pyramid], [f[batch:] for f in pyramid]
