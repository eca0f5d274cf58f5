"""Image registration with a pretrained COVER vector head (``cover register``, :func:`cover.register`).

- :mod:`cover.registration.pipeline`: ``register``: read, place, resample, predict the field,
  warp and write (one implementation for 2D and 3D).
- :mod:`cover.registration.grid`: the voxel grids: placing the moving image in the fixed grid,
  the checkpoint's spacing, padding.
- :mod:`cover.registration.fit`: optional affine pre-alignment and per-pair refinement.
"""
