"""Float32 islands inside autocast for the losses' large reductions.

Under fp16 autocast a matrix product over many pixels (a covariance over every pixel of a
384^2 batch) or a product whose result meets a large mask constant overflows fp16's range
(65504); such products run inside :func:`full_precision`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def full_precision(tensor: torch.Tensor) -> AbstractContextManager:
    """A context in which autocast is off for ``tensor``'s device (float32 matrix products).

    Args:
        tensor: Any tensor on the device the computation runs on.

    Returns:
        ``torch.autocast(..., enabled=False)``, or a null context where autocast does not exist
        (the meta device).
    """
    if not torch.amp.is_autocast_available(tensor.device.type):
        return nullcontext()
    return torch.autocast(device_type=tensor.device.type, enabled=False)
