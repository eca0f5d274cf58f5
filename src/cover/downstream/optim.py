"""Optimiser of a fine-tuning run: the pretrained backbone and the new head as two parameter groups.

:func:`transferred` picks what a run takes from the pretrained checkpoint (all, or the encoder).

With a pretrained checkpoint the backbone parameters it loaded form their own Adam group, whose
learning rate is ``backbone_lr_scale`` times the head's and stays zero for the first
``freeze_steps`` steps (linear probe, then fine-tuning of everything: LP-FT). After the
frozen phase the backbone warms up again over ``warmup_steps`` and then follows the head's
schedule (cosine decay, or constant). During the frozen phase :func:`hold_frozen` drops the
backbone's gradients, so Adam leaves its weights and its moment estimates untouched (bit-identical weights). Without
a pretrained checkpoint all parameters form one group with the plain schedule (there are no
pretrained features to protect). Backbone parameters the checkpoint did not provide (the
decoder under ``transfer: encoder`` or of an encoder-only export) are fresh, so they train
with the head, never frozen or scaled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import torch
from torch import nn

from cover.engine.loop import adam
from cover.engine.schedule import warmup_constant, warmup_cosine
from cover.errors import ConfigError, CoverError
from cover.models.loading import Checkpoint, encoder_prefixes

#: Name of the parameter group holding the pretrained backbone.
PRETRAINED_GROUP = "pretrained"


def head_factor(step: int, total_steps: int, warmup_steps: int, schedule: str = "cosine") -> float:
    """Learning-rate multiplier of the head (and of scratch networks) at ``step`` (0-based).

    Args:
        step: Optimiser step.
        total_steps: Steps of the run (unused by ``constant``).
        warmup_steps: Linear warm-up steps.
        schedule: One of :data:`cover.engine.schedule.LR_SCHEDULES`.

    Returns:
        A factor in ``[0, 1]``.
    """
    if schedule == "constant":
        return warmup_constant(step, warmup_steps)
    return warmup_cosine(step, total_steps, warmup_steps)


def backbone_factor(
    step: int, total_steps: int, warmup_steps: int, scale: float, freeze_steps: int, schedule: str = "cosine"
) -> float:
    """Learning-rate multiplier of the pretrained backbone at ``step`` (0-based).

    Args:
        step: Optimiser step.
        total_steps: Steps of the run.
        warmup_steps: Warm-up steps of the head; the backbone warms up as long after its
            frozen phase.
        scale: Backbone learning rate relative to the head's.
        freeze_steps: Steps during which the backbone does not train.
        schedule: The head's schedule (:data:`cover.engine.schedule.LR_SCHEDULES`).

    Returns:
        ``0`` during the frozen phase, else ``scale`` times the head's multiplier, ramped
        linearly over ``warmup_steps`` after the frozen phase.
    """
    head = head_factor(step, total_steps, warmup_steps, schedule)
    if freeze_steps <= 0:
        return scale * head
    if step < freeze_steps:
        return 0.0
    ramp = min(1.0, (step - freeze_steps + 1) / max(1, warmup_steps))
    return scale * ramp * head


def build_optimizer(
    network: nn.Module,
    lr: float,
    weight_decay: float,
    total_steps: int,
    warmup_steps: int,
    pretrained: Collection[str],
    backbone_lr_scale: float = 1.0,
    freeze_steps: int = 0,
    schedule: str = "cosine",
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR, list[nn.Parameter]]:
    """Adam with a warm-up/cosine (or warm-up/constant) schedule over the trainable parameters of ``network``.

    Args:
        network: A downstream network with ``backbone`` and ``head``; parameters with
            ``requires_grad=False`` (``freeze``) are left out.
        lr: The head's peak learning rate.
        weight_decay: Adam weight decay.
        total_steps: Steps of the run.
        warmup_steps: Linear warm-up steps.
        pretrained: Names (``network.backbone`` state-dict keys) of the backbone weights loaded
            from a pretrained checkpoint; only those parameters form the pretrained group that
            ``backbone_lr_scale`` and ``freeze_steps`` apply to. Empty: scratch, one group.
        backbone_lr_scale: Backbone learning rate relative to ``lr``.
        freeze_steps: Steps during which the backbone stays fixed.
        schedule: After the warm-up, ``cosine`` decay to 0 at ``total_steps`` or ``constant``
            (:data:`cover.engine.schedule.LR_SCHEDULES`).

    Returns:
        The optimiser (group ``head`` first, then ``pretrained`` when it has parameters),
        its scheduler and the list of all trainable parameters.
    """
    trainable = [p for p in network.parameters() if p.requires_grad]
    head: Callable[[int], float] = lambda s: head_factor(s, total_steps, warmup_steps, schedule)  # noqa: E731
    if not pretrained:
        groups = [{"params": trainable, "name": "all"}]
        lambdas = [head]
    else:
        names = set(pretrained)
        backbone_ids = {id(p) for n, p in network.backbone.named_parameters() if n in names}
        groups = [{"params": [p for p in trainable if id(p) not in backbone_ids], "name": "head"}]
        lambdas = [head]
        backbone = [p for p in trainable if id(p) in backbone_ids]
        if backbone:
            groups.append({"params": backbone, "name": PRETRAINED_GROUP})
            lambdas.append(
                lambda s: backbone_factor(s, total_steps, warmup_steps, backbone_lr_scale, freeze_steps, schedule)
            )
    optimizer = adam(groups, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return optimizer, scheduler, trainable


def hold_frozen(optimizer: torch.optim.Optimizer, step: int, freeze_steps: int) -> None:
    """Drop the pretrained group's gradients while ``step < freeze_steps``.

    Adam skips parameters without a gradient, so neither the weights nor the moment
    estimates change (weight decay included) during the frozen phase. Call after the
    backward pass and before gradient clipping and the optimiser step.

    Args:
        optimizer: An optimiser of :func:`build_optimizer`.
        step: The current 0-based step.
        freeze_steps: Length of the frozen phase.
    """
    if step >= freeze_steps:
        return
    for group in optimizer.param_groups:
        if group.get("name") == PRETRAINED_GROUP:
            for parameter in group["params"]:
                parameter.grad = None


def transferred(checkpoint: Checkpoint, backbone: nn.Module, transfer: str) -> Checkpoint:
    """The part of a pretrained checkpoint that a fine-tuning run starts from.

    Args:
        checkpoint: The pretrained checkpoint.
        backbone: The downstream backbone (built like the checkpoint's).
        transfer: ``all`` (encoder and decoder) or ``encoder`` (the decoder keeps the fresh
            initialisation of the run's seed, as with an encoder-only export).

    Returns:
        ``checkpoint`` itself, or a copy holding the encoder's weights only (marked encoder-only).
    """
    if transfer == "all":
        return checkpoint
    try:
        prefixes = encoder_prefixes(backbone)
    except CoverError:
        raise ConfigError(f"transfer: the {type(backbone).__name__} backbone has no known encoder; use all") from None
    weights = {k: v for k, v in checkpoint.weights.items() if k.startswith(prefixes)}
    return dataclasses.replace(checkpoint, weights=weights, metadata={**checkpoint.metadata, "encoder_only": True})
