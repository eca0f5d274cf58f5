"""PyTorch DDP plumbing for runs launched by ``torchrun`` (NCCL on GPUs, gloo on CPU)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cover.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: Global rank.
        world_size: Number of processes.
        local_rank: Rank on this node.
        device: The device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; other names passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_distributed(device: str) -> DistributedContext:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Args:
        device: The configured device (``auto``, ``cpu``, ``cuda``...).

    Returns:
        The context; single-process runs get rank 0 of 1 and no process group.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if world_size > 1:
        if resolved.type == "cuda":
            available = torch.cuda.device_count()
            if local_rank >= available:
                raise ConfigError(
                    f"devices: {os.environ.get('LOCAL_WORLD_SIZE', local_rank + 1)} processes on this node but only "
                    f"{available} CUDA device(s); use at most {available} processes per node"
                )
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
        # Every rank has read its config (and, on resume, the run's config.yaml) before rank 0
        # writes into the output folder.
        dist.barrier(device_ids=[local_rank] if resolved.type == "cuda" else None)
    return DistributedContext(rank, world_size, local_rank, resolved)


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_agree(flag: bool, context: DistributedContext) -> bool:
    """True when ``flag`` is true on every rank (a collective; every rank must call it)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item() > 0.5)


def any_rank(flag: bool, context: DistributedContext) -> bool:
    """True when ``flag`` is true on some rank (a collective)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0.5)


def any_rank_on_device(flag: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Whether a boolean device flag is set on any rank, as a device flag (a collective; no host wait).

    Args:
        flag: A 0-d bool tensor on this rank's device.
        context: The run's context.

    Returns:
        A 0-d bool tensor, the same on every rank.
    """
    if not context.enabled:
        return flag
    value = flag.to(torch.float32).view(1)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value[0] > 0.5


def mean_on_device(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Mean over ranks of a tensor of this rank's values (a collective; no host wait).

    Args:
        values: Any float tensor, the same shape on every rank.
        context: The run's context.

    Returns:
        The element-wise mean over ranks (``values`` itself in a single-process run).
    """
    if not context.enabled:
        return values
    total = values.to(torch.float64).contiguous()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / context.world_size


def broadcast_object(value: Any, context: DistributedContext) -> Any:
    """Rank 0's ``value`` on every rank (a collective; other ranks' values are ignored).

    Args:
        value: A picklable value (on ranks other than 0, anything, e.g. ``None``).
        context: The run's context.

    Returns:
        Rank 0's value.
    """
    if not context.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=context.device if context.device.type == "cuda" else None)
    return box[0]


def barrier(context: DistributedContext) -> None:
    """Wait until every rank arrives (no-op in a single-process run)."""
    if context.enabled:
        dist.barrier(device_ids=[context.local_rank] if context.device.type == "cuda" else None)


def mean_over_ranks(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average scalars over ranks (a collective), e.g. losses of the global batch for logging.

    Args:
        values: Name to this rank's value (same names on every rank).
        context: The run's context.

    Returns:
        Name to the mean over ranks.
    """
    if not context.enabled or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {n: float(v) / context.world_size for n, v in zip(names, tensor.tolist(), strict=True)}


def state_digest(module_or_state: nn.Module | dict[str, torch.Tensor]) -> str:
    """SHA-256 of a ``state_dict``'s names, dtypes, shapes and exact bytes (sorted by name).

    Args:
        module_or_state: A module or a ``state_dict``.

    Returns:
        Hex digest; equal digests mean bit-identical weights.
    """
    state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def gather_digests(module: nn.Module, context: DistributedContext) -> list[str]:
    """Every rank's :func:`state_digest` of its model, in rank order (a collective).

    DDP keeps replicas identical by averaging gradients; this checks it at the end of a run.

    Args:
        module: This rank's model (unwrapped).
        context: The run's context.

    Returns:
        ``world_size`` hex digests.
    """
    digest = state_digest(module)
    if not context.enabled:
        return [digest]
    gathered: list[str | None] = [None] * context.world_size
    dist.all_gather_object(gathered, digest)
    return [str(d) for d in gathered]
