"""Training defaults chosen per device: precision, memory layout, data workers, cuDNN and TF32.

A config leaves these settings unset (``amp: auto``, the others ``null``) and
:func:`fill_device_defaults` fills them from the device the run will use, so ``--dry-run``
and ``config.yaml`` show the values a run trains with; any of them given in a YAML file or
on the command line wins.

On a CUDA device:

* ``amp``: bf16 where the GPU computes in it (Ampere and newer), else fp16 with loss scaling
  (:func:`resolve_amp`);
* ``channels_last``: on, the layout cuDNN's tensor-core convolutions read without a transpose
  (NVIDIA's guidance; ``benchmarks/gpu_check.py`` measures both layouts);
* ``num_workers``: up to 4 loader processes, leaving one core per training process;
* ``cudnn_benchmark``: on, since every step has the same shapes (a fixed crop and batch);
* ``tf32``: on, float32 matrix products and convolutions in TF32 on tensor cores.

On the CPU: ``amp`` none, ``channels_last`` off (a 1.1-1.25x gain on an AVX-512 CPU but not
on every CPU, ``benchmarks/RESULTS.md``), no loader processes (they would take the cores the
step computes on), and the two CUDA switches off (they do nothing there).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from cover.errors import ConfigError

#: Allowed values of the ``amp`` option.
AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def resolve_amp(amp: str, device_type: str, bf16_supported: bool | None = None) -> str:
    """The precision ``amp`` stands for on a device type (``auto`` chosen per device).

    Args:
        amp: A value of :data:`AMP_CHOICES`.
        device_type: ``cpu``, ``cuda``, ...
        bf16_supported: Whether the CUDA device computes in bf16 (``None``: ask torch; only
            read for ``auto`` on CUDA).

    Returns:
        ``none``, ``bf16`` or ``fp16``.
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp: {amp!r} is not allowed (allowed: {', '.join(AMP_CHOICES)})")
    if amp != "auto":
        return amp
    if device_type != "cuda":
        return "none"
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if bf16_supported else "fp16"


#: Config keys that :func:`fill_device_defaults` fills when unset.
DEVICE_KEYS = ("amp", "channels_last", "num_workers", "cudnn_benchmark", "tf32")
#: Most DataLoader workers chosen by default on a CUDA device.
MAX_CUDA_WORKERS = 4


@dataclasses.dataclass(frozen=True)
class DeviceDefaults:
    """The defaults of one device type (see the module docstring)."""

    amp: str
    channels_last: bool
    num_workers: int
    cudnn_benchmark: bool
    tf32: bool


def device_type(name: str) -> str:
    """The device type a ``device`` setting runs on (``auto``: ``cuda`` when available, else ``cpu``)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except (RuntimeError, ValueError):
        raise ConfigError(f"device: {name!r} is not a device (allowed: auto, cpu, cuda, cuda:N)") from None


def usable_cpus() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_defaults(
    kind: str, cpus: int | None = None, processes: int | None = None, bf16_supported: bool | None = None
) -> DeviceDefaults:
    """The defaults for a device type.

    Args:
        kind: ``cuda``, ``cpu``, ...
        cpus: CPU cores of the machine (``None``: this process's).
        processes: Training processes on this machine (``None``: ``LOCAL_WORLD_SIZE`` or 1).
        bf16_supported: Whether the GPU computes in bf16 (``None``: ask torch).

    Returns:
        The defaults.
    """
    if kind != "cuda":
        return DeviceDefaults(amp="none", channels_last=False, num_workers=0, cudnn_benchmark=False, tf32=False)
    cpus = usable_cpus() if cpus is None else cpus
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if processes is None else processes
    workers = max(0, min(MAX_CUDA_WORKERS, cpus // max(1, processes) - 1))
    amp = resolve_amp("auto", "cuda", bf16_supported)
    return DeviceDefaults(amp=amp, channels_last=True, num_workers=workers, cudnn_benchmark=True, tf32=True)


def fill_device_defaults(config: Any, kind: str | None = None, **facts: Any) -> Any:
    """``config`` with its unset device settings filled for the device it will run on.

    Args:
        config: A config dataclass with a ``device`` field and some of :data:`DEVICE_KEYS`.
        kind: The device type (``None``: from ``config.device``).
        **facts: ``cpus``, ``processes``, ``bf16_supported`` for :func:`device_defaults`.

    Returns:
        A copy with ``amp`` resolved (``auto`` replaced) and the ``None`` settings filled.
    """
    kind = device_type(config.device) if kind is None else kind
    defaults = device_defaults(kind, **facts)
    changes: dict[str, Any] = {}
    for key in DEVICE_KEYS:
        if not hasattr(config, key):
            continue
        value = getattr(config, key)
        if key == "amp":
            changes[key] = defaults.amp if value == "auto" else resolve_amp(value, kind)
        elif value is None:
            changes[key] = getattr(defaults, key)
    return dataclasses.replace(config, **changes)


def apply_backend_settings(config: Any, device: torch.device) -> None:
    """Set cuDNN's autotuner and TF32 for a CUDA run (process-wide; nothing on other devices).

    Args:
        config: With ``cudnn_benchmark`` and ``tf32``.
        device: The training device.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = bool(config.cudnn_benchmark)
    torch.backends.cuda.matmul.allow_tf32 = bool(config.tf32)
    torch.backends.cudnn.allow_tf32 = bool(config.tf32)
