"""The public Python API: the functions behind the ``cover`` sub-commands, with the same argument names.

``cover.pretrain``, ``cover.finetune``, ``cover.evaluate``, ``cover.predict``, ``cover.register``,
``cover.export``, ``cover.load_pretrained``, ``cover.analyze``, ``cover.benchmark`` and
``cover.configure_logging`` are these (:mod:`cover` re-exports them). Each is imported from its
room on first use, so ``import cover`` and ``import cover.api`` stay fast;
``from cover.api import finetune`` works as well.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it.
FUNCTIONS: dict[str, str] = {
    "pretrain": "cover.pretraining.pretrain",
    "finetune": "cover.downstream.finetune",
    "evaluate": "cover.downstream.evaluate",
    "predict": "cover.downstream.predict",
    "register": "cover.registration.pipeline",
    "export": "cover.models.export",
    "load_pretrained": "cover.models.export",
    "analyze": "cover.analysis.analyze",
    "benchmark": "cover.benchmark.runner",
    "configure_logging": "cover.runtime",
}

__all__ = sorted(FUNCTIONS)


def __getattr__(name: str) -> Any:
    """Import ``name``'s module on first use and return the function."""
    if name in FUNCTIONS:
        function = getattr(importlib.import_module(FUNCTIONS[name]), name)
        globals()[name] = function
        return function
    raise AttributeError(f"module 'cover.api' has no attribute {name!r}")
