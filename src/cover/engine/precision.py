"""Mixed precision shared by the training loops: ``auto``, ``none``, ``bf16`` or ``fp16`` autocast.

bf16 needs no loss scaling; fp16 uses a ``GradScaler`` (whose state goes into checkpoints).
``auto`` resolves per device (:func:`resolve_amp`): bf16 on a CUDA device that supports it,
fp16 with the scaler on an older one, none on the CPU (whose float32 kernels are the fast
ones). fp16 also runs on the CPU, where torch autocasts to float16 and scales the loss like on
a GPU: slow (most CPUs have no half-precision convolutions) but it is how fp16 numerics are
tested without a GPU. With ``none`` both helpers are no-ops.

Autocast runs matrix products in the low precision. Reductions over many pixels whose sums
exceed fp16's range (65504), such as a covariance over every pixel of a 384^2 batch, must
run inside :func:`cover.losses.precision.full_precision`.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

import torch

from cover.devices import resolve_amp

log = logging.getLogger(__name__)


def check_amp(amp: str, device: torch.device) -> None:
    """Raise a one-line :class:`ConfigError` for an unknown precision; warn about fp16 on a CPU.

    Args:
        amp: A value of :data:`cover.devices.AMP_CHOICES`.
        device: The training device.
    """
    if resolve_amp(amp, device.type) == "fp16" and device.type == "cpu":
        log.warning("amp fp16 on the CPU is slow (few CPUs compute in float16); bf16 or none train faster there")


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    """The autocast context for the forward pass and the loss.

    Args:
        amp: A value of :data:`cover.devices.AMP_CHOICES` (``auto`` is resolved for ``device``).
        device: The training device.

    Returns:
        ``torch.autocast`` with the chosen dtype, or a null context for ``none``.
    """
    amp = resolve_amp(amp, device.type)
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=resolve_amp(amp, device.type) == "fp16")
