"""The public Python API: the functions behind the ``cover`` sub-commands, with the same argument names.

``cover.pretrain``, ``cover.finetune``, ``cover.evaluate``, ``cover.predict``, ``cover.register``,
``cover.export``, ``cover.load_pretrained``, ``cover.analyze``, ``cover.benchmark`` and
``cover.configure_logging`` are these (:mod:`cover` re-exports them);
``from cover.api import finetune`` works as well.

Editors and type checkers read the imports under ``TYPE_CHECKING`` below (``name as name``: a
re-export). At run time each function's module is imported on first use (:data:`FUNCTIONS`):
importing them all costs the time of importing torch, MONAI and every room, while ``import
cover`` and ``import cover.api`` import none of it (``python -X importtime -c "import cover"``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cover.analysis.analyze import analyze as analyze
    from cover.benchmarking.runner import benchmark as benchmark
    from cover.downstream.evaluate import evaluate as evaluate
    from cover.downstream.finetune import finetune as finetune
    from cover.downstream.predict import predict as predict
    from cover.models.export import export as export
    from cover.models.export import load_pretrained as load_pretrained
    from cover.pretraining.pretrain import pretrain as pretrain
    from cover.registration.pipeline import register as register
    from cover.runtime import configure_logging as configure_logging

#: Public name -> the module that defines it, imported on first use (the same pairs as the
#: ``TYPE_CHECKING`` imports above; ``tests/test_api.py`` checks that they agree).
FUNCTIONS: dict[str, str] = {
    "pretrain": "cover.pretraining.pretrain",
    "finetune": "cover.downstream.finetune",
    "evaluate": "cover.downstream.evaluate",
    "predict": "cover.downstream.predict",
    "register": "cover.registration.pipeline",
    "export": "cover.models.export",
    "load_pretrained": "cover.models.export",
    "analyze": "cover.analysis.analyze",
    "benchmark": "cover.benchmarking.runner",
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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
