"""The one training loop behind every trainer (pretraining methods, fine-tuning).

A trainer describes *what* one step computes with a :class:`Task`; the :class:`Engine` owns
everything else, the same way for every trainer:

- mixed precision (autocast around the task's forward pass and loss, fp16 loss scaling);
- the optimiser step: gradients, clipping of their global norm, the non-finite guard (a step
  whose loss or gradient is not finite on any rank is skipped and counted; too many in a row
  abort), the learning-rate schedule;
- DDP: the network is wrapped for the task's forward pass, logged values are means over ranks,
  stop and checkpoint decisions are taken by every rank together, final weights are compared;
- ``log.csv``/TensorBoard rows and the progress bar;
- checkpoints every ``checkpoint_every`` steps, every ``checkpoint_minutes``, at the end, when the
  task stops early and on a stop signal, with exact resume: the random states are saved with
  the weights and batches are functions of ``(seed, step)``;
- stop signals: a first SIGTERM/SIGINT finishes the step, saves and raises
  :class:`~cover.errors.TrainingInterrupted` naming the command that resumes.

One step runs, in this order: ``task.prepare(batch, step)`` without gradients, then
``task.losses(network, inputs)`` under autocast (its ``"loss"`` is minimised, every entry is
logged), the optimiser step, then on every rank ``task.after_step(done, values)`` (e.g. a
validation whose scores join the log row), the log row, the progress bar,
``task.should_stop(done)`` (early stopping) and the checkpoint.

The host never waits for the device inside a step except at *sync steps*: log steps, the last
step, checkpoint steps, steps the task asks for (:meth:`Task.needs_values`, e.g. validations)
and a stop. A step's losses, gradient norm and finiteness stay on the device; a non-finite step
is skipped there (the fused Adam's ``found_inf``, or the fp16 grad scaler's), and at the next
sync step one device-to-host copy brings every pending step's values, which then go through the
non-finite guard and ``task.after_step`` in step order. In a distributed run the stop signal and
``checkpoint_minutes`` (collectives) are checked at sync steps only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shlex
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cover.engine.checkpoint import (
    CHECKPOINT_DIR,
    capture_rng_state,
    checkpoint_path,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from cover.engine.distributed import (
    DistributedContext,
    any_rank,
    any_rank_on_device,
    gather_digests,
    mean_on_device,
)
from cover.engine.guards import NonFiniteGuard, StopSignals
from cover.engine.logger import RunLogger
from cover.engine.precision import autocast
from cover.engine.schedule import warmup_cosine
from cover.errors import TrainingInterrupted
from cover.runtime import progress_bar

log = logging.getLogger(__name__)


class Task:
    """What a trainer supplies to the :class:`Engine`: one step's computation and its hooks.

    Subclasses implement :meth:`prepare` and :meth:`losses`; the other hooks default to doing
    nothing.

    Attributes:
        name: The ``cover`` command (progress bar, resume hint), e.g. ``pretrain``.
        checkpoint_format: ``format`` tag of the training-state checkpoints.
        columns: ``log.csv`` columns after ``step``, in order; the engine fills ``lr`` (learning rate
            after the step) and ``seconds`` (training time, resumed runs included).
    """

    name: str = "train"
    checkpoint_format: str = "cover-checkpoint/1"
    columns: list[str] = []

    def prepare(self, batch: Any, step: int) -> Any:
        """This rank's inputs of step ``step`` (0-based), computed without gradients.

        Args:
            batch: What the engine's batch iterable yielded for this step.
            step: Optimiser step.

        Returns:
            Anything :meth:`losses` takes.
        """
        raise NotImplementedError

    def losses(self, network: nn.Module, inputs: Any) -> dict[str, torch.Tensor]:
        """Forward pass and losses under autocast.

        Args:
            network: The trained network (wrapped for DDP in a distributed run).
            inputs: From :meth:`prepare`.

        Returns:
            Scalar tensors by name; ``"loss"`` is minimised and every entry is logged.
        """
        raise NotImplementedError

    def after_backward(self, step: int) -> None:
        """Called after the backward pass of step ``step``, before gradients are unscaled and clipped."""

    def needs_values(self, done: int) -> bool:
        """Whether step ``done``'s :meth:`after_step` must run right after it (forces a sync step)."""
        return False

    def after_step(self, done: int, values: dict[str, float]) -> dict[str, float]:
        """Called on every rank after the optimiser step, at the next sync step (a collective may run here).

        Args:
            done: Finished steps.
            values: This step's losses, means over ranks (non-finite on a skipped step).

        Returns:
            Values that join a log row written at this step (non-empty forces a row).
        """
        return {}

    def log_row(self, done: int, values: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
        """The ``log.csv`` row of step ``done`` without ``lr`` and ``seconds`` (called on rank 0 only)."""
        return {**values, **extra}

    def postfix(self, values: dict[str, float]) -> dict[str, str] | None:
        """Progress-bar postfix after a step, or ``None`` to leave it."""
        return None

    @property
    def finished(self) -> bool:
        """Whether the task had already stopped early (a resumed run then trains no step)."""
        return False

    def should_stop(self, done: int) -> str | None:
        """After step ``done``: the message of an early stop, or ``None`` to go on."""
        return None

    def state(self, done: int, skipped: int, seconds: float) -> dict[str, Any]:
        """Task entries of the training-state checkpoint of step ``done``.

        Args:
            done: Finished steps.
            skipped: Non-finite steps skipped so far (resumed runs included).
            seconds: Training time so far, summed over resumed runs.

        Returns:
            Entries stored after the engine's (plain data, ``weights_only``-loadable).
        """
        return {}


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """The loop settings every trainer's config holds (same names as the config keys)."""

    steps: int
    amp: str
    grad_clip: float
    log_every: int
    checkpoint_every: int
    checkpoint_minutes: float | None
    keep_checkpoints: int
    max_nonfinite_steps: int

    @classmethod
    def of(cls, config: Any) -> LoopOptions:
        """The options of a trainer's config (any object with these attributes)."""
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})


@dataclasses.dataclass
class Parts:
    """What the engine trains and checkpoints.

    Attributes:
        model: The network (unwrapped: its ``state_dict`` is saved).
        optimizer: Its optimiser.
        scheduler: The learning-rate schedule, stepped once per step.
        scaler: The gradient scaler (a pass-through unless fp16).
        network: What the task's forward pass runs (``model``, compiled or not; DDP-wrapped by
            the engine in a distributed run).
        parameters: The parameters whose gradient norm is clipped (default: those of ``model``
            that require gradients).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    network: nn.Module | None = None
    parameters: list[nn.Parameter] | None = None

    def states(self, saved: dict[str, Any]) -> list[tuple[Any, Any]]:
        """``(part, its state in a checkpoint)`` pairs for :func:`~cover.engine.checkpoint.load_states`."""
        return [
            (self.model, saved.get("model")),
            (self.optimizer, saved.get("optimizer")),
            (self.scheduler, saved.get("scheduler")),
            (self.scaler, saved.get("scaler", {})),
        ]


def adam(parameters: Iterable[Any], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam, fused where torch has the fused kernel (CPU, CUDA): it skips a non-finite step on the device.

    Args:
        parameters: Parameters or parameter groups (dicts with ``params``).
        lr: Learning rate.
        weight_decay: Weight decay.

    Returns:
        The optimiser.
    """
    parameters = list(parameters)
    tensors = [p for item in parameters for p in (item["params"] if isinstance(item, dict) else [item])]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors) and bool(tensors)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused)


def adam_warmup_cosine(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float, steps: int, warmup_steps: int
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam and its schedule: linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    optimizer = adam(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, steps, warmup_steps))
    return optimizer, scheduler


@dataclasses.dataclass
class Resumed:
    """Where a run starts: step 0, or the state of a resumed checkpoint.

    Attributes:
        step: Finished steps.
        skipped: Non-finite steps skipped before.
        seconds: Training time before, summed over earlier runs.
        rng: Random states to restore when the loop starts (``None``: keep the current ones).
    """

    step: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rng: dict[str, Any] | None = None


@dataclasses.dataclass
class LoopResult:
    """What a finished loop reports.

    Attributes:
        done: Finished steps (resumed ones included).
        skipped: Non-finite steps skipped (resumed runs included).
        seconds: Wall time of this process's loop (not of earlier runs).
        digests: SHA-256 of every rank's final weights, in rank order.
    """

    done: int
    skipped: int
    seconds: float
    digests: list[str]


class Engine:
    """Trains ``parts`` on ``task``'s steps (see the module docstring).

    Args:
        task: The trainer's step and hooks.
        parts: Model, optimiser, schedule and scaler (already restored on resume).
        options: Loop settings.
        context: The run's processes.
        out: Output folder (``log.csv``, ``tensorboard/``, ``checkpoints/``).
        header: Checkpoint entries after ``format`` and ``step`` (e.g. ``config``, ``metadata``).
        resumed: Where the run starts.
    """

    def __init__(
        self,
        task: Task,
        parts: Parts,
        options: LoopOptions,
        context: DistributedContext,
        out: Path,
        header: dict[str, Any],
        resumed: Resumed | None = None,
    ) -> None:
        self.task, self.parts, self.options, self.context = task, parts, options, context
        self.out, self.header = Path(out), header
        self.resumed = resumed or Resumed()
        self.done = self.resumed.step
        self.parameters = parts.parameters or [p for p in parts.model.parameters() if p.requires_grad]

    def run(self, batches: Iterable[Any]) -> LoopResult:
        """Train from the resumed step to ``options.steps`` (or an early stop).

        Args:
            batches: Step ``start``'s batch first, then one per step (extra ones are not drawn).

        Returns:
            The result; every rank returns (and must call) it.

        Raises:
            TrainingInterrupted: A stop signal arrived; the checkpoint of the last step is saved.
            CoverError: Too many consecutive non-finite steps.
        """
        if self.resumed.rng is not None:
            restore_rng_state(self.resumed.rng)
        # `is None`, not `or`: a compiled module proxies len() to its module, so its truth value raises.
        network = self.parts.model if self.parts.network is None else self.parts.network
        self.network = self._wrap(network)
        main = self.context.is_main
        self.logger = RunLogger(self.out, self.task.columns, self.done) if main else None
        self.guard = NonFiniteGuard(self.options.max_nonfinite_steps, self.out, main, self.resumed.skipped)
        self.bar = progress_bar(
            total=self.options.steps, initial=self.done, desc=self.task.name, disable=not main, dynamic_ncols=True
        )
        tic = self.last_save = time.monotonic()
        self.clock = tic - self.resumed.seconds  # log.csv's seconds continue from the resumed checkpoint's
        self.pending: list[tuple[int, torch.Tensor]] = []
        steps = range(self.done, self.options.steps if not self.task.finished else self.done)
        with StopSignals() as signals:
            try:
                for step, batch in zip(steps, batches, strict=False):
                    record = self._step(batch, step)
                    self.done = step + 1
                    if self._after(record, signals):
                        break
                self._flush()
            finally:
                self.bar.close()
                if self.logger is not None:
                    self.logger.close()
        return LoopResult(self.done, self.guard.skipped, time.monotonic() - tic, self._digests())

    def _wrap(self, network: nn.Module) -> nn.Module:
        """The network for the forward pass: DDP-wrapped in a distributed run."""
        if not self.context.enabled:
            return network
        device = self.context.device
        ids = [device.index] if device.type == "cuda" else None
        # static_graph: every step runs the same graph, and DDP then also copes with parameters a
        # task leaves unused (SimCLR's decoder, MONAI's frozen final_conv, the decoder in classification).
        return nn.parallel.DistributedDataParallel(network, device_ids=ids, static_graph=True)

    def _step(self, batch: Any, step: int) -> torch.Tensor:
        """One optimiser step without waiting for the device; its record (see :meth:`_flush`)."""
        parts, options, device = self.parts, self.options, self.context.device
        with torch.no_grad():
            inputs = self.task.prepare(batch, step)
        with autocast(options.amp, device):
            losses = self.task.losses(self.network, inputs)
        self.names = list(losses)
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(losses["loss"]).backward()
        self.task.after_backward(step)
        parts.scaler.unscale_(parts.optimizer)
        limit = options.grad_clip if options.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, limit)
        values = torch.stack([v.detach().float() for v in (*losses.values(), grad_norm)])
        bad = any_rank_on_device(~torch.isfinite(values[[0, -1]]).all(), self.context)
        self._optimizer_step(bad)
        parts.scaler.update()  # a no-op unless fp16, where a skipped step lowers the scale
        parts.scheduler.step()
        return torch.cat([values, bad.float().view(1)])

    def _optimizer_step(self, bad: torch.Tensor) -> None:
        """Apply the step unless ``bad`` (a device flag), without reading the flag on the host."""
        optimizer, scaler = self.parts.optimizer, self.parts.scaler
        if scaler.is_enabled():
            scaler.step(optimizer)  # its own non-finite check skips the step (a non-finite loss gives such gradients)
        elif getattr(optimizer, "_step_supports_amp_scaling", False):  # fused: found_inf skips on the device
            optimizer.grad_scale, optimizer.found_inf = None, bad.float()
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
        elif not bool(bad):  # other optimisers: one host read of the flag
            optimizer.step()

    def _flush(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """Bring the pending steps' records to the host (one copy) and run their guard and hooks in order.

        Returns:
            The last pending step's ``(values, extra)`` (losses as means over ranks; the
            ``after_step`` values), or ``None`` when no step was pending.
        """
        if not self.pending:
            return None
        done = [d for d, _ in self.pending]
        table = torch.stack([r for _, r in self.pending])  # (steps, losses + grad norm + bad flag)
        self.pending.clear()
        losses = mean_on_device(table[:, : len(self.names)], self.context)  # the global batch's
        rows, flags = losses.tolist(), table[:, -1].tolist()
        for step, row, flag in zip(done, rows, flags, strict=True):
            self.guard.check(flag > 0.5, step)
            values = dict(zip(self.names, row, strict=True))
            extra = self.task.after_step(step, values)
        return values, extra

    def _after(self, record: torch.Tensor, signals: StopSignals) -> bool:
        """Hooks, log row, progress bar and checkpoint after a step; whether to stop early."""
        done, options = self.done, self.options
        self.pending.append((done, record))
        due = (
            done % options.log_every == 0
            or done == options.steps
            or done % options.checkpoint_every == 0
            or self.task.needs_values(done)
        )
        flushed = self._flush() if due else None
        checked = due or not self.context.enabled  # one process: these checks read the host only
        stop = checked and any_rank(signals.requested, self.context)
        timed = checked and self._minutes_due()
        if (stop or timed) and flushed is None:
            flushed = self._flush()
        if flushed is not None:
            values, extra = flushed
            if self.logger is not None and (done % options.log_every == 0 or done == options.steps or extra):
                row = self.task.log_row(done, values, extra)
                lr = self.parts.scheduler.get_last_lr()[0]
                self.logger.log(done, {**row, "lr": lr, "seconds": time.monotonic() - self.clock})
            postfix = self.task.postfix(values)
            if postfix is not None and self.context.is_main:
                self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        reason = self.task.should_stop(done)
        if reason:
            self._flush()
        if done % options.checkpoint_every == 0 or done == options.steps or reason or stop or timed:
            self.save()
        if stop:
            raise TrainingInterrupted(
                f"interrupted at step {done}; checkpoint saved in {self.out / CHECKPOINT_DIR}; "
                f"continue with: cover {self.task.name} --out {shlex.quote(str(self.out))} --resume auto"
            )
        if reason and self.context.is_main:
            self.bar.write(reason)
        return reason is not None

    def _minutes_due(self) -> bool:
        """Whether ``checkpoint_minutes`` have passed since the last save on some rank (a collective)."""
        minutes = self.options.checkpoint_minutes
        due = minutes is not None and time.monotonic() - self.last_save >= 60 * minutes
        return any_rank(due, self.context)

    def save(self) -> None:
        """Write the training-state checkpoint of the finished steps (rank 0) and prune old ones."""
        seconds = time.monotonic() - self.clock
        if self.context.is_main:
            parts = self.parts
            state = {
                "format": self.task.checkpoint_format,
                "step": self.done,
                **self.header,
                "model": parts.model.state_dict(),
                "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(),
                "scaler": parts.scaler.state_dict(),
                "rng": capture_rng_state(),
                **self.task.state(self.done, self.guard.skipped, seconds),
            }
            save_checkpoint(state, checkpoint_path(self.out, self.done))
            prune_checkpoints(self.out, self.options.keep_checkpoints)
        self.last_save = time.monotonic()

    def _digests(self) -> list[str]:
        """Every rank's final-weights digest; DDP replicas must be identical (a collective)."""
        digests = gather_digests(self.parts.model, self.context)
        if self.context.is_main and len(set(digests)) > 1:
            log.warning("the processes ended with different weights; rank 0's were saved")
        return digests
