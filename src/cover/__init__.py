"""cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning.

Implements COVER (He & Li, "Vector Contrastive Learning for Pixel-wise Pretraining in
Medical Vision", ICCV 2025) for 2D and 3D medical images.
"""

__version__ = "0.1.0"

CITATION = (
    "He, Y. and Li, S. Vector Contrastive Learning for Pixel-wise Pretraining in Medical "
    "Vision. ICCV 2025. arXiv:2506.20850"
)

# The public Python API, with the same argument names as the ``cover`` sub-commands. Imported
# lazily so that ``import cover`` stays fast.
_API = {
    "pretrain": "cover.train.pretrain",
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


def __getattr__(name: str):
    """Resolve ``cover.pretrain`` and the other API functions on first use."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cover' has no attribute {name!r}")
