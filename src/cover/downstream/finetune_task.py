"""One fine-tuning step for the training engine, with validation, best checkpoint and early stopping.

The :class:`FinetuneTask` draws this rank's share of a step's labeled crops, augments them,
computes the task loss, validates every ``val_every`` steps (rank 0 scores, every rank gets the
scores), saves ``best.pt`` when the validation score improves and stops early after ``patience``
validations without improvement. What a training-state checkpoint carries besides the engine's
states is its :class:`Progress`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cover.config import to_dict
from cover.downstream.augment import augment_batch
from cover.downstream.config import FinetuneConfig
from cover.downstream.inference import classify, segment_logits
from cover.downstream.loading import LoadedCase
from cover.downstream.metrics import classification_scores, mean_std, segmentation_scores
from cover.downstream.optim import hold_frozen
from cover.engine.distributed import DistributedContext, broadcast_object
from cover.engine.loop import Parts, Task
from cover.models.networks import save_finetuned

#: Format tag of fine-tuning training-state checkpoints (``OUT/checkpoints/step_N.pt``).
CHECKPOINT_FORMAT = "cover-finetune-checkpoint/1"


@torch.no_grad()
def validation_score(
    network: nn.Module,
    cases: list[LoadedCase],
    task: str,
    num_classes: int,
    patch_size: tuple[int, ...],
    divisor: int,
    overlap: float,
    device: torch.device,
) -> dict[str, float]:
    """Validation metrics of the current network.

    Args:
        network: The network (switched to eval mode and back).
        cases: Loaded validation cases.
        task: ``seg`` or ``cls``.
        num_classes: ``K``.
        patch_size: Sliding-window size.
        divisor: Backbone divisor.
        overlap: Sliding-window overlap.
        device: Device.

    Returns:
        seg: ``{"score", "val_dice"}`` (mean over cases of the mean foreground Dice);
        cls: ``{"score", "val_auc", "val_accuracy"}`` (score = AUC, or accuracy when AUC is
        undefined).
    """
    was_training = network.training
    network.eval()
    try:
        if task == "seg":
            dices = []
            for case in cases:
                logits = segment_logits(network, case.image.to(device), patch_size, divisor, overlap=overlap)
                scores = segmentation_scores(logits.argmax(0), case.label, num_classes, hd95=False)
                dices.append(mean_std(scores["dice"])[0])  # NaN when no class is in label or prediction
            dice = mean_std(dices)[0]
            return {"score": dice, "val_dice": dice}
        probabilities = np.concatenate(
            [
                classify(network, torch.stack([c.image for c in cases[i : i + 16]]).to(device)).cpu().numpy()
                for i in range(0, len(cases), 16)
            ]
        )
        scores = classification_scores(probabilities, np.asarray([c.case.target for c in cases]))
        score = scores["auc"] if not math.isnan(scores["auc"]) else scores["accuracy"]
        return {"score": score, "val_auc": scores["auc"], "val_accuracy": scores["accuracy"]}
    finally:
        network.train(was_training)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of one step's augmentation on one rank (rank 0's equals a single-process run's)."""
    key = [seed, step, 0xA06] if rank == 0 else [seed, step, rank, 0xA06]
    return int(np.random.default_rng(key).integers(0, 2**62))


@dataclasses.dataclass
class Progress:
    """What a training-state checkpoint carries besides weights and optimiser.

    Attributes:
        best: Best validation score so far.
        best_step: Step of ``best``.
        stale: Validations since the last improvement.
        history: Training loss of every finished step (mean over ranks).
        last_val: Latest validation metrics.
        skipped: Non-finite steps skipped.
        early_stopped: Whether early stopping ended the run.
        seconds: Training time up to this state, summed over resumed runs (``log.csv``).
    """

    best: float = -math.inf
    best_step: int = 0
    stale: int = 0
    history: list[float] = dataclasses.field(default_factory=list)
    last_val: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: int = 0
    early_stopped: bool = False
    seconds: float = 0.0


@dataclasses.dataclass
class Validation:
    """What validating needs: the cases, the metric's name and where the best network goes.

    Attributes:
        cases: Loaded validation cases (may be empty: no validation).
        num_classes: ``K``.
        divisor: The backbone's size divisor.
        metadata: Checkpoint metadata of ``best.pt``.
        out: The run's output folder.
    """

    cases: list[LoadedCase]
    num_classes: int
    divisor: int
    metadata: dict[str, Any]
    out: Path


class FinetuneTask(Task):
    """Fine-tuning's step and hooks for the :class:`~cover.engine.loop.Engine`.

    Args:
        config: Resolved config (``steps`` resolved).
        parts: The network (unwrapped; validated and saved as ``best.pt``) and its optimiser.
        criterion: ``DiceCELoss`` (segmentation) or cross-entropy (classification).
        validation: Validation cases and ``best.pt`` metadata.
        progress: The resumed progress (a fresh one for a new run).
        context: The run's processes.
        freeze_steps: Steps during which a pretrained backbone stays fixed (its gradients dropped).
    """

    name = "finetune"
    checkpoint_format = CHECKPOINT_FORMAT

    def __init__(
        self,
        config: FinetuneConfig,
        parts: Parts,
        criterion: nn.Module,
        validation: Validation,
        progress: Progress,
        context: DistributedContext,
        freeze_steps: int = 0,
    ) -> None:
        self.config, self.network, self.optimizer, self.criterion = config, parts.model, parts.optimizer, criterion
        self.freeze_steps = freeze_steps
        self.validation, self.progress, self.context = validation, progress, context
        self.metric = "val_dice" if config.task == "seg" else "val_auc"
        self.columns = ["loss", "lr", "seconds", self.metric] + (["val_accuracy"] if config.task == "cls" else [])
        share = config.batch_size // context.world_size
        self.rows = slice(context.rank * share, (context.rank + 1) * share)

    @property
    def finished(self) -> bool:
        """Whether the resumed run had stopped early and this run's ``patience`` is spent too.

        A run stopped by patience and resumed with a larger ``patience`` (or none) trains on from
        its last state, its count of stale validations going on, so it retraces the run that
        had the larger patience from the start.
        """
        return self.progress.early_stopped and self._patience_spent()

    def _patience_spent(self) -> bool:
        patience = self.config.patience
        return patience is not None and self.progress.stale >= patience

    def prepare(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's augmented crops of the step's global batch ``sampler.batch(step)``: images and targets."""
        config, device = self.config, self.context.device
        images, targets = batch
        images, targets = images[self.rows].to(device), targets[self.rows].to(device)
        generator = torch.Generator(device=device).manual_seed(step_seed(config.seed, step, self.context.rank))
        if config.task == "seg":
            return augment_batch(images, targets, config.augment, generator)
        images, _ = augment_batch(images, None, config.augment, generator)
        return images, targets

    def losses(self, network: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The task loss of the crops."""
        images, targets = inputs
        logits = network(images)
        return {"loss": self.criterion(logits.float(), targets[:, None] if self.config.task == "seg" else targets)}

    def after_backward(self, step: int) -> None:
        """Drop the pretrained backbone's gradients during the first ``freeze_steps`` steps."""
        hold_frozen(self.optimizer, step, self.freeze_steps)

    def needs_values(self, done: int) -> bool:
        """Validation steps: every ``val_every`` steps and the last."""
        return bool(self.validation.cases) and (done % self.config.val_every == 0 or done == self.config.steps)

    def after_step(self, done: int, values: dict[str, float]) -> dict[str, float]:
        """Keep the loss; validate every ``val_every`` steps and at the end (the scores join the log)."""
        if math.isfinite(values["loss"]):
            self.progress.history.append(values["loss"])
        if self.needs_values(done):
            return self.validate(done)
        return {}

    def validate(self, step: int) -> dict[str, float]:
        """Validate on rank 0, share the scores, keep the best network; the log row's scores."""
        config, progress, validation = self.config, self.progress, self.validation
        scores = None
        if self.context.is_main:
            scores = validation_score(
                self.network, validation.cases, config.task, validation.num_classes, config.size,
                validation.divisor, config.overlap, self.context.device,
            )  # fmt: skip
        progress.last_val = broadcast_object(scores, self.context)
        if math.isnan(progress.last_val["score"]):
            # No case could be scored (no class in any validation label or prediction): this
            # validation says nothing, so it neither counts towards early stopping nor selects.
            return {k: v for k, v in progress.last_val.items() if k != "score"}
        if progress.last_val["score"] > progress.best:
            progress.best, progress.best_step, progress.stale = progress.last_val["score"], step, 0
            if self.context.is_main:
                values = {**validation.metadata, "step": step, self.metric: progress.best}
                save_finetuned(validation.out / "best.pt", self.network, values, to_dict(config))
        else:
            progress.stale += 1
        return {k: v for k, v in progress.last_val.items() if k != "score"}

    def log_row(self, done: int, values: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
        """The validation scores of this step, if any, and the latest finite loss."""
        return {**extra, "loss": self.progress.history[-1] if self.progress.history else math.nan}

    def postfix(self, values: dict[str, float]) -> dict[str, str] | None:
        """The latest loss and the best validation score."""
        progress = self.progress
        if not progress.history:
            return None
        best = f"{progress.best:.3f}" if progress.best > -math.inf else "-"
        return {"loss": f"{progress.history[-1]:.3f}", self.metric: best}

    def should_stop(self, done: int) -> str | None:
        """Early stop after ``patience`` validations without a better score."""
        self.progress.early_stopped = self._patience_spent()
        if not self.progress.early_stopped:
            return None
        return f"early stop at step {done}: no better {self.metric} in {self.config.patience} validations"

    def stopped_by(self, done: int) -> str:
        """What ended the run after ``done`` steps.

        Returns:
            ``patience`` (early stopping), ``cap`` (all ``steps`` run although early stopping
            was on: ``patience`` with validation cases) or ``steps`` (all ``steps`` run, as
            planned without early stopping).
        """
        if self.progress.early_stopped:
            return "patience"
        watched = self.config.patience is not None and bool(self.validation.cases)
        return "cap" if watched and done >= self.config.steps else "steps"

    def state(self, done: int, skipped: int, seconds: float) -> dict[str, Any]:
        """The progress (validation bookkeeping, loss history, non-finite steps, training time)."""
        self.progress.skipped, self.progress.seconds = skipped, seconds
        return {"progress": dataclasses.asdict(self.progress)}
