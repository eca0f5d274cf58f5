"""Will a training configuration fit in memory? An estimate made before the first step.

The estimate runs one forward pass of a CPU copy of the network at batch :data:`PROBE_BATCH` (2:
SimCLR needs a negative) on a small crop (at most :data:`PROBE_VOXELS` voxels), under the run's
autocast precision, on fake tensors (``FakeTensorMode``: shapes and dtypes, no arithmetic, the
same saved bytes as real tensors, ``tests/engine/test_memory.py``), and counts the bytes autograd
keeps for the backward pass (``torch.autograd.graph.saved_tensors_hooks``), then scales the
activations among them linearly with the batch per process and the number of voxels (activations
of convolutions, local vector heads and sampled-pixel losses all grow at most linearly with both).
Autocast's low-precision copies of the weights, also kept for the backward pass, are counted once:
they do not grow with the batch or the crop. What the forward pass saves follows the model as it
is (its layers, the MoV schedule, which tensors autocast keeps in 16 bits). The peak of a training
step is then about::

    ACTIVATION_FACTOR x activations + weight copies + 3 x trainable parameter bytes
        (gradients, Adam moments) + RUNTIME_BYTES

``ACTIVATION_FACTOR`` covers the gradients of activations alive during the backward pass;
``RUNTIME_BYTES`` what the runtime holds beside tensors (allocator slack, kernel scratch), which
matters at small sizes only. Both were calibrated against torch's ``MemTracker`` on fake
tensors at the paper's sizes (``benchmarks/bench_memory.py``; benchmarks/RESULTS.md, "Memory
estimate against MemTracker") and against the peak resident memory of real CPU steps at
128 x 128 (``tests/engine/test_memory.py``).

The probe runs on the CPU whatever the training device (fp16 probed as bf16: the same bytes),
so on a GPU it allocates nothing there and the free memory read afterwards is the run's own.
Available memory is the accelerator's free memory (``torch.cuda.mem_get_info`` plus blocks
PyTorch's allocator holds but does not use), or on the CPU the smaller of ``MemAvailable``
(``/proc/meminfo``) and the cgroup's limit minus its usage. ``COVER_MEMORY_CHECK=0`` skips the
check.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedOperatorException,
)

from cover.engine.distributed import DistributedContext, any_rank
from cover.engine.precision import autocast
from cover.errors import ConfigError

#: Samples in the probe forward pass.
PROBE_BATCH = 2
#: Largest crop (voxels) the probe forward pass runs on.
PROBE_VOXELS = {2: 128 * 128, 3: 32 * 32 * 32}
#: Peak training memory per byte of saved activations (calibrated, see the module docstring).
ACTIVATION_FACTOR = 1.1
#: Memory a training process holds beside its tensors (calibrated, see the module docstring).
RUNTIME_BYTES = 128 * 2**20
#: What a fake-tensor probe raises when the forward pass needs tensor values (then it runs on real ones).
_VALUE_DEPENDENT = (DataDependentOutputException, DynamicOutputShapeException, UnsupportedOperatorException)
#: Fraction of the available memory a run may plan to use.
USABLE_FRACTION = 0.9


@dataclass
class MemoryEstimate:
    """Planned peak memory of a training step beyond what the process already holds.

    Attributes:
        activation_bytes: Activation bytes of one sample at the full size.
        fixed_bytes: Gradients and optimiser state of the trainable parameters, and
            ``runtime_bytes``.
        batch: Samples per process.
        runtime_bytes: The part of ``fixed_bytes`` held beside tensors (:data:`RUNTIME_BYTES`).
    """

    activation_bytes: float
    fixed_bytes: float
    batch: int
    runtime_bytes: float = 0.0

    def total(self, batch: int | None = None) -> float:
        """Bytes needed at ``batch`` samples per process (default: the configured batch)."""
        return ACTIVATION_FACTOR * self.activation_bytes * (self.batch if batch is None else batch) + self.fixed_bytes

    def tensor_bytes(self) -> float:
        """The tensors' share of :meth:`total` (what torch's ``MemTracker`` counts)."""
        return self.total() - self.runtime_bytes


def probe_size(size: Sequence[int], divisor: int) -> tuple[int, ...]:
    """A crop of at most :data:`PROBE_VOXELS` voxels with ``size``'s proportions.

    Args:
        size: Training crop, one value per axis.
        divisor: Each axis must be a multiple of this (the network's down-sampling).

    Returns:
        The probe crop (``size`` itself when it is small enough).
    """
    limit = PROBE_VOXELS[len(size)]
    if math.prod(size) <= limit:
        return tuple(int(s) for s in size)
    shrink = (limit / math.prod(size)) ** (1 / len(size))
    return tuple(max(divisor, int(s * shrink) // divisor * divisor) for s in size)


class SavedBytes(NamedTuple):
    """What autograd keeps for the backward pass of a forward pass, in bytes (each storage once).

    Attributes:
        activations: Tensors computed from the inputs (they grow with the batch and the crop).
        parameter_copies: Copies of parameters (autocast's low-precision weights), one per
            parameter whatever the batch and the crop.
    """

    activations: int
    parameter_copies: int


def saved_activation_bytes(forward: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor] = ()) -> SavedBytes:
    """Bytes autograd keeps for the backward pass of ``forward()`` (each storage once).

    Args:
        forward: Runs the forward pass and returns the loss.
        exclude: The parameters: not counted (saved by reference); their copies (a cast whose
            autograd input is one of them) are counted apart.

    Returns:
        The bytes of the distinct storages saved for backward.
    """
    parameters = {id(t) for t in exclude}
    skipped = {_storage_key(t) for t in exclude}
    seen: dict[int, tuple[int, bool]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in skipped:
            seen[key] = (tensor.untyped_storage().nbytes(), _copied_parameter(tensor) in parameters)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward()
    del loss
    copies = sum(size for size, copy_ in seen.values() if copy_)
    return SavedBytes(sum(size for size, _ in seen.values()) - copies, copies)


def _storage_key(tensor: torch.Tensor) -> int:
    """Identity of ``tensor``'s storage, for real and fake tensors alike (a fake storage's address is 0)."""
    return tensor.untyped_storage()._cdata


def _copied_parameter(tensor: torch.Tensor) -> int | None:
    """``id`` of the leaf tensor ``tensor`` is a cast of (autocast's weight copies), else None."""
    function = tensor.grad_fn
    if function is None or type(function).__name__ != "ToCopyBackward0":
        return None
    source = function.next_functions[0][0] if function.next_functions else None
    return id(source.variable) if hasattr(source, "variable") else None


def cpu_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy of ``model`` in the default memory layout (the original is not touched)."""
    twin = copy.deepcopy(model).to("cpu")
    for tensor in (*twin.parameters(), *twin.buffers()):
        tensor.data = tensor.data.contiguous()
    return twin


def estimate(
    model: torch.nn.Module,
    forward: Callable[[torch.nn.Module, tuple[int, ...], int], torch.Tensor],
    size: Sequence[int],
    divisor: int,
    batch: int,
    amp: str = "none",
) -> MemoryEstimate:
    """Estimate the peak memory of training ``model`` at ``batch`` samples of ``size``.

    Args:
        model: The network (not changed: the probe runs on a CPU copy, with the global RNG kept).
        forward: ``forward(copy, probe_size, probe_batch)`` runs one forward pass of
            ``probe_batch`` samples at ``probe_size`` on the copy's device and returns the loss.
        size: Training crop, one value per axis.
        divisor: The network's size divisor.
        batch: Samples per process.
        amp: The run's precision (``none``, ``bf16``, ``fp16``); the probe runs under it.

    Returns:
        The estimate.
    """
    probe = probe_size(size, divisor)
    precision = "bf16" if amp in ("bf16", "fp16") else "none"  # fp16 saves the same bytes as bf16
    run = functools.partial(_probe, model, lambda twin: forward(twin, probe, PROBE_BATCH), precision)
    try:
        # Fake tensors: the bytes autograd would keep, without computing them (a bf16 probe on a CPU
        # without bf16 units took minutes: benchmarks/RESULTS.md, "Memory estimate against MemTracker").
        saved = run(FakeTensorMode(allow_non_fake_inputs=True))
    except _VALUE_DEPENDENT:  # control flow that reads values (how many pixels dense InfoNCE samples)
        saved = run(contextlib.nullcontext())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    per_sample = saved.activations / PROBE_BATCH * math.prod(size) / math.prod(probe)
    fixed = 3 * trainable + saved.parameter_copies + RUNTIME_BYTES
    return MemoryEstimate(per_sample, fixed, batch, runtime_bytes=RUNTIME_BYTES)


def _probe(
    model: torch.nn.Module, forward: Callable[[torch.nn.Module], torch.Tensor], precision: str, mode: Any
) -> SavedBytes:
    """:func:`saved_activation_bytes` of ``forward`` on a fresh CPU copy of ``model`` under ``mode`` and autocast."""
    twin = cpu_twin(model)
    with torch.random.fork_rng(devices=[]), mode, autocast(precision, torch.device("cpu")):
        return saved_activation_bytes(lambda: forward(twin), exclude=list(twin.parameters()))


def available_bytes(device: torch.device) -> float:
    """Free memory for training on ``device`` (CPU: RAM, bounded by the cgroup's limit)."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # free to this process
        return float(torch.cuda.mem_get_info(device)[0] + cached)
    free = math.inf  # unknown outside Linux: no check
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = float(line.split()[1]) * 1024
    except OSError:
        pass
    limit, usage = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        text = limit.read_text().strip()
        if text != "max":
            free = min(free, float(text) - float(usage.read_text()))
    except (OSError, ValueError):
        pass
    return free


def _gigabytes(value: float) -> str:
    return f"{value / 2**30:.1f} GB" if value >= 2**30 else f"{value / 2**20:.0f} MB"


def check_fits(
    what: str, estimate_: MemoryEstimate, size: Sequence[int], device: torch.device, processes: int = 1
) -> None:
    """Stop with a one-line :class:`ConfigError` naming what to lower when a run cannot fit.

    Args:
        what: ``pretraining`` or ``fine-tuning`` (for the message).
        estimate_: From :func:`estimate`.
        size: Training crop (for the message).
        device: The training device.
        processes: Processes sharing this memory (CPU runs under ``torchrun``).
    """
    if os.environ.get("COVER_MEMORY_CHECK", "1") == "0":
        return
    free = USABLE_FRACTION * available_bytes(device) / max(1, processes)
    need = estimate_.total()
    if need <= free:
        return
    per_sample = ACTIVATION_FACTOR * estimate_.activation_bytes
    fits = min(estimate_.batch - 1, max(0, math.floor((free - estimate_.fixed_bytes) / per_sample)))
    crop = "x".join(str(s) for s in size)
    advice = f"lower --batch-size (at most {fits} fits at this size) or --size" if fits else "lower --size"
    raise ConfigError(
        f"memory: {what} at batch {estimate_.batch * processes} of {crop} needs about {_gigabytes(need * processes)} "
        f"but {_gigabytes(free * processes)} are free ({device.type}); {advice} (COVER_MEMORY_CHECK=0 skips this check)"
    )


def fit_or_stop(
    what: str,
    model: torch.nn.Module,
    forward: Callable[[torch.nn.Module, tuple[int, ...], int], torch.Tensor],
    size: Sequence[int],
    divisor: int,
    batch: int,
    context: DistributedContext,
    amp: str = "none",
) -> MemoryEstimate | None:
    """Estimate a run's memory and stop every process with one line when it cannot fit.

    Args:
        what: ``pretraining`` or ``fine-tuning``.
        model: The network (untouched).
        forward: See :func:`estimate`.
        size: Training crop.
        divisor: The network's size divisor.
        batch: Global batch size.
        context: The run's processes.
        amp: The run's precision.

    Returns:
        The estimate, or None when ``COVER_MEMORY_CHECK=0`` skips the check (no probe runs).
    """
    if os.environ.get("COVER_MEMORY_CHECK", "1") == "0":
        return None
    share = max(1, batch // context.world_size)
    found = estimate(model, forward, size, divisor, share, amp)
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if context.device.type == "cpu" else 1
    problem: ConfigError | None = None
    try:
        check_fits(what, found, size, context.device, sharing)
    except ConfigError as error:
        problem = error
    if any_rank(problem is not None, context):
        raise problem or ConfigError(f"memory: another process of this {what} run cannot fit; lower --batch-size")
    return found
