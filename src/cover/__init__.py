"""cover: pixel- and voxel-wise self-supervised pretraining by vector contrastive learning.

Implements COVER (He & Li, "Vector Contrastive Learning for Pixel-wise Pretraining in
Medical Vision", ICCV 2025) for 2D and 3D medical images.
"""

__version__ = "0.1.0"

CITATION = (
    "He, Y. and Li, S. Vector Contrastive Learning for Pixel-wise Pretraining in Medical "
    "Vision. ICCV 2025. arXiv:2506.20850"
)
