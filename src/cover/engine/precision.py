"""Mixed precision shared by the training loops: ``none``, ``bf16`` or ``fp16`` autocast.

bf16 runs on CPUs and GPUs and needs no loss scaling; fp16 is CUDA-only and uses a
``GradScaler`` (whose state goes into checkpoints). With ``none`` both helpers are no-ops.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from cover.errors import ConfigError

#: Allowed values of the ``amp`` option.
AMP_CHOICES = ("none", "bf16", "fp16")


def check_amp(amp: str, device: torch.device) -> None:
    """Raise a one-line :class:`ConfigError` for a precision the device cannot run.

    Args:
        amp: ``none``, ``bf16`` or ``fp16``.
        device: The training device.
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp: {amp!r} is not allowed (allowed: {', '.join(AMP_CHOICES)})")
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: fp16 needs a CUDA device; use bf16 on CPU")


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    """The autocast context for the forward pass and the loss.

    Args:
        amp: ``none``, ``bf16`` or ``fp16``.
        device: The training device.

    Returns:
        ``torch.autocast`` with the chosen dtype, or a null context for ``none``.
    """
    check_amp(amp, device)
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A ``GradScaler``, enabled for fp16 only (a pass-through otherwise)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
