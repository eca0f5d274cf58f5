"""Registry of pretraining methods, selected by name (``cover pretrain --method NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cover.errors import ConfigError
from cover.methods.base import PretrainMethod

MethodFactory = Callable[..., PretrainMethod]
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Decorator adding a method factory ``factory(backbone, model, **options)``."""

    def add(factory: MethodFactory) -> MethodFactory:
        METHODS[name] = factory
        return factory

    return add


def build_method(name: str, backbone: nn.Module, model: Any, options: dict[str, Any] | None = None) -> PretrainMethod:
    """Build a registered method around a backbone.

    Args:
        name: Method name, e.g. ``"cover"``.
        backbone: Pyramid-returning backbone.
        model: The :class:`cover.config.ModelConfig` (head sizes, window radius).
        options: Method-specific options (loss weights, temperature, ...).

    Returns:
        The method module.
    """
    # The built-in methods are registered: importing this module ran ``cover/methods/__init__.py``.
    if name not in METHODS:
        raise ConfigError(f"method '{name}' is unknown (allowed: {', '.join(sorted(METHODS))})")
    return METHODS[name](backbone, model, **(options or {}))
