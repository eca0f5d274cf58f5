"""cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning.

Implements COVER (He & Li, "Vector Contrastive Learning for Pixel-wise Pretraining in
Medical Vision", ICCV 2025) for 2D and 3D medical images.

Examples:
    >>> import cover
    >>> cover.__version__
    '0.1.0'
    >>> cover.finetune.__module__
    'cover.downstream.finetune'
"""

# ``typing.TYPE_CHECKING`` without importing ``typing`` (10-20 ms, against under 1 ms for all of
# ``import cover`` in ``python -X importtime``); type checkers read the block below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # at run time, __getattr__ imports each function on first use
    from cover.api import (
        analyze,
        benchmark,
        configure_logging,
        evaluate,
        export,
        finetune,
        load_pretrained,
        predict,
        pretrain,
        register,
    )

__version__ = "0.1.0"

CITATION = (
    "He, Y. and Li, S. Vector Contrastive Learning for Pixel-wise Pretraining in Medical "
    "Vision. ICCV 2025. arXiv:2506.20850"
)

__all__ = [
    "CITATION",
    "__version__",
    "analyze",
    "benchmark",
    "configure_logging",
    "evaluate",
    "export",
    "finetune",
    "load_pretrained",
    "predict",
    "pretrain",
    "register",
]


def __getattr__(name: str):
    """Resolve ``cover.pretrain`` and the other API functions (:mod:`cover.api`) on first use."""
    import importlib

    api = importlib.import_module("cover.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'cover' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
