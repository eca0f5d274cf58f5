"""One pretraining step for the training engine: views of a batch, the method's losses, and what is logged."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from cover.config import PretrainConfig
from cover.engine.distributed import DistributedContext
from cover.engine.loop import Task
from cover.engine.precision import autocast
from cover.methods.collapse import collapse_stats
from cover.views import ViewGenerator, ViewPair

#: Format tag of pretraining checkpoints (``OUT/checkpoints/step_N.pt``).
CHECKPOINT_FORMAT = "cover-checkpoint/1"
#: Images and random pixel pairs of the collapse statistic computed at every log step.
COLLAPSE_IMAGES = 4
COLLAPSE_PAIRS = 1024
#: Its columns in ``log.csv`` / TensorBoard (see :mod:`cover.methods.collapse`).
COLLAPSE_COLUMNS = ("feat_pair_cos", "feat_eff_rank")


def view_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the view generator at one step on one rank (stateless, so resume is exact)."""
    return int(np.random.default_rng([seed, step, rank, 0xC0E]).integers(0, 2**62))


@torch.no_grad()
def finest_features(model: torch.nn.Module, images: torch.Tensor, amp: str, device: torch.device) -> torch.Tensor:
    """The backbone's finest decoder features of at most :data:`COLLAPSE_IMAGES` images (an extra forward pass).

    Used when the training forward's features could not be kept (a compiled network).

    Args:
        model: The method module (its ``backbone`` returns the decoder pyramid).
        images: ``(B, C, *S)`` this step's view b.
        amp: Mixed precision of the run.
        device: Device.

    Returns:
        ``(min(B, COLLAPSE_IMAGES), C_finest, *S)``.
    """
    training = model.training
    model.eval()
    try:
        with autocast(amp, device):
            return model.backbone(images[:COLLAPSE_IMAGES])[-1]
    finally:
        model.train(training)


def feature_collapse(finest: torch.Tensor, step: int) -> dict[str, float]:
    """Collapse statistic of finest decoder features (:func:`cover.methods.collapse.collapse_stats`).

    The pixel pairs come from a generator seeded by ``step``, so the global random state (and a
    resumed run's numbers) is untouched.

    Args:
        finest: ``(B, C, *S)`` features of at most :data:`COLLAPSE_IMAGES` images.
        step: Finished steps (seeds the pixel draw).

    Returns:
        ``{"feat_pair_cos", "feat_eff_rank"}``.
    """
    stats = collapse_stats(finest, COLLAPSE_PAIRS, torch.Generator().manual_seed(int(step)))
    return {"feat_pair_cos": stats["pair_cos"], "feat_eff_rank": stats["eff_rank"]}


class PretrainTask(Task):
    """A pretraining method's step: a pair of views of the batch, the method's losses, collapse statistics.

    Args:
        config: Resolved config.
        model: The method module (backbone + head; unwrapped).
        generator: The run's view generator.
        context: The run's processes.
    """

    name = "pretrain"
    checkpoint_format = CHECKPOINT_FORMAT

    def __init__(
        self, config: PretrainConfig, model: torch.nn.Module, generator: ViewGenerator, context: DistributedContext
    ) -> None:
        self.config, self.model, self.generator, self.context = config, model, generator, context
        self.columns = [*model.logged, *COLLAPSE_COLUMNS, "lr", "seconds"]
        #: Finite logged values of every step of this process's run (means over ranks).
        self.history: dict[str, list[float]] = {}
        #: The latest collapse statistic (empty before the first log step).
        self.collapse: dict[str, float] = {}
        self.views: ViewPair | None = None
        #: View b's finest features from the forward pass of a log step (for the collapse statistic).
        self.finest: torch.Tensor | None = None
        self._capture = False

    def prepare(self, batch: torch.Tensor, step: int) -> ViewPair:
        """Views of this rank's images ``(B, C, *source_size)`` from a generator seeded by ``(seed, step, rank)``."""
        device = self.context.device
        source = batch.to(device, non_blocking=True)
        seed = view_seed(self.config.seed, step, self.context.rank)
        self.views = self.generator(source, torch.Generator(device=device).manual_seed(seed))
        done, config = step + 1, self.config
        self._capture = (done % config.log_every == 0 or done == config.steps) and not config.compile
        return self.views

    def losses(self, network: torch.nn.Module, inputs: ViewPair) -> dict[str, torch.Tensor]:
        """The method's losses on a view pair; at a log step view b's finest features are kept on the side."""
        if not self._capture:
            return network(inputs)
        handle = self.model.backbone.register_forward_hook(self._keep_finest)
        try:
            return network(inputs)
        finally:
            handle.remove()

    def _keep_finest(self, module: torch.nn.Module, args: Any, pyramid: list[torch.Tensor]) -> None:
        """Forward hook: a copy of view b's finest features (methods run the backbone on ``cat([a, b])``)."""
        finest = pyramid[-1].detach()
        batch = self.views.view_b.shape[0]
        if finest.shape[0] == 2 * batch:
            finest = finest[batch:]
        self.finest = finest[:COLLAPSE_IMAGES].clone()

    def after_step(self, done: int, values: dict[str, float]) -> dict[str, float]:
        """Keep the finite values for the summary's ``final_*`` means."""
        for key, value in values.items():
            if math.isfinite(value):
                self.history.setdefault(key, []).append(value)
        return {}

    def log_row(self, done: int, values: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
        """The losses and the collapse statistic of this step's view b.

        The features are those of this step's own forward pass (the weights before its update);
        only a compiled network, whose forward cannot be hooked, costs an extra forward pass.
        """
        finest, self.finest = self.finest, None
        if finest is None:
            finest = finest_features(self.model, self.views.view_b, self.config.amp, self.context.device)
        self.collapse = feature_collapse(finest, done)
        return {**values, **self.collapse}

    def postfix(self, values: dict[str, float]) -> dict[str, str]:
        """The loss terms (without the total)."""
        return {k.replace("loss_", ""): f"{v:.3f}" for k, v in values.items() if k != "loss"}

    def state(self, done: int, skipped: int, seconds: float) -> dict[str, Any]:
        """Data order, non-finite steps and training time of the checkpoint."""
        return {
            # Batches are a pure function of (seed, step) (StepBatchSampler), so this is all the
            # data-loading state a resume needs; items come from their own (index, seed) keys.
            "data_order": {"sampler": "step-indexed", "seed": self.config.seed, "next_step": done},
            "nonfinite_steps": skipped,
            "seconds": seconds,  # training time so far, summed over resumed runs
        }
