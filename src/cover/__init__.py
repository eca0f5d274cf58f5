"""cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning.

Implements COVER (He & Li, "Vector Contrastive Learning for Pixel-wise Pretraining in
Medical Vision", ICCV 2025) for 2D and 3D medical images.
"""

__version__ = "0.1.0"

CITATION = (
    "He, Y. and Li, S. Vector Contrastive Learning for Pixel-wise Pretraining in Medical "
    "Vision. ICCV 2025. arXiv:2506.20850"
)

# The public Python API (:mod:`cover.api`): ``cover.pretrain``, ``cover.finetune``, ... resolve
# there on first use, so that ``import cover`` stays fast.


def __getattr__(name: str):
    """Resolve ``cover.pretrain`` and the other API functions (:data:`cover.api.FUNCTIONS`) on first use."""
    import importlib

    api = importlib.import_module("cover.api")
    if name in api.FUNCTIONS:
        return getattr(api, name)
    raise AttributeError(f"module 'cover' has no attribute {name!r}")
