"""``scratch``: no pretraining, the baseline every pretrained method is compared with.

The name is registered so that ``--method scratch`` is understood everywhere, but there is
nothing to pretrain: building it raises a one-line :class:`cover.errors.ConfigError` telling
the user to fine-tune without a checkpoint instead. ``cover benchmark`` treats it as "no
checkpoint": its downstream models start from the backbone's random initialisation.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cover.errors import ConfigError
from cover.methods.base import PretrainMethod
from cover.methods.registry import register_method

SCRATCH = "scratch"


def is_pretrained(method: str) -> bool:
    """Whether ``method`` produces a pretraining checkpoint (everything but ``scratch``)."""
    return method != SCRATCH


@register_method(SCRATCH)
def build_scratch(backbone: nn.Module, model: Any, **options: Any) -> PretrainMethod:
    """Refuse to build: ``scratch`` means no pretraining."""
    raise ConfigError(
        "method 'scratch' means no pretraining, so there is nothing to run; fine-tune without a "
        "checkpoint to train from scratch (cover benchmark does this for the scratch row)"
    )
