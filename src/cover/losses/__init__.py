"""The pretraining losses in one place, as modules (and the functions they call).

- :mod:`cover.losses.masked`: per-voxel losses over a valid mask: the vector loss ``L_vec``,
  the consistency loss ``L_con``, VICReg-style variance/covariance terms, the endpoint error.
- :mod:`cover.losses.infonce`: NT-Xent (SimCLR) and pixel-level InfoNCE, with negatives gathered
  across processes under DDP.
"""

from cover.losses.infonce import DenseInfoNCELoss, NTXentLoss
from cover.losses.masked import ConsistencyLoss, VarianceCovarianceLoss, VectorLoss

__all__ = ["ConsistencyLoss", "DenseInfoNCELoss", "NTXentLoss", "VarianceCovarianceLoss", "VectorLoss"]
