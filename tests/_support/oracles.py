"""Independent NumPy references for the geometry conventions of ``docs/method.md``.

Nothing here calls :mod:`cover`: these are the oracles the tests compare the package against.

* ``sample_linear(x, coords)(p) = x(coords(p))``, multilinear, voxel centres at integer
  coordinates, corners outside the grid read as zero (``warp``'s "zeros outside").
* ``upsample2_field``: 2x up-sampling of a displacement field in the half-voxel convention of
  max-pooled pyramids (fine voxel ``p`` sits at coarse coordinate ``p / 2 - 1/4``, clamped to the
  grid), values doubled.
* ``vpa_reference``: the coarse-to-fine aggregation written out level by level.
* ``loop_nt_xent``: NT-Xent anchor by anchor with Python floats.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from torch.nn import functional as F  # noqa: N812


def sample_linear(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Multilinear sampling with zeros outside.

    Args:
        x: ``(C, *S)`` values.
        coords: ``(ndim, *T)`` voxel coordinates into ``S`` (channel ``k`` along axis ``k``).

    Returns:
        ``(C, *T)`` values.
    """
    x = np.asarray(x, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    ndim = coords.shape[0]
    spatial = x.shape[1:]
    base = np.floor(coords)
    frac = coords - base
    base = base.astype(np.int64)
    out = np.zeros((x.shape[0], *coords.shape[1:]))
    for corner in itertools.product((0, 1), repeat=ndim):
        weight = np.ones(coords.shape[1:])
        index = []
        inside = np.ones(coords.shape[1:], dtype=bool)
        for k, c in enumerate(corner):
            weight = weight * (frac[k] if c else 1.0 - frac[k])
            i = base[k] + c
            inside &= (i >= 0) & (i < spatial[k])
            index.append(np.clip(i, 0, spatial[k] - 1))
        values = x[(slice(None), *index)]
        out += np.where(inside, weight, 0.0) * values
    return out


def sample_nearest(x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Nearest-voxel sampling with zeros outside (coordinates must not be half-integers).

    Args:
        x: ``(C, *S)`` values.
        coords: ``(ndim, *T)`` voxel coordinates.

    Returns:
        ``(C, *T)`` values.
    """
    index = np.rint(np.asarray(coords, dtype=np.float64)).astype(np.int64)
    spatial = x.shape[1:]
    inside = np.all([(index[k] >= 0) & (index[k] < spatial[k]) for k in range(len(spatial))], axis=0)
    clipped = [np.clip(index[k], 0, spatial[k] - 1) for k in range(len(spatial))]
    return np.where(inside, x[(slice(None), *clipped)], 0.0)


def grid(spatial: Sequence[int]) -> np.ndarray:
    """``(ndim, *spatial)`` voxel coordinates."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in spatial], indexing="ij"))


def warp(x: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """``warp(x, phi)(p) = x(p + phi(p))`` for ``x`` ``(C, *S)`` and ``phi`` ``(ndim, *S)``."""
    return sample_linear(x, grid(phi.shape[1:]) + phi)


def upsample2_field(phi: np.ndarray) -> np.ndarray:
    """2x up-sampling of ``(ndim, *S)`` in the half-voxel convention, values doubled."""
    ndim = phi.shape[0]
    fine = [2 * n for n in phi.shape[1:]]
    coords = grid(fine) / 2.0 - 0.25
    for k in range(ndim):
        coords[k] = np.clip(coords[k], 0.0, phi.shape[1 + k] - 1)
    return 2.0 * sample_linear(phi, coords)


def vpa_reference(
    residual: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
    pyramid_a: Sequence[np.ndarray],
    pyramid_b: Sequence[np.ndarray],
) -> np.ndarray:
    """Coarse-to-fine aggregation of per-level residual fields, one sample at a time.

    For ``l < L``: ``ka = warp(Fa[l], phi)`` (``Fa[0]`` as is), ``w = U(residual(l, Fb[l], ka))``,
    ``phi = w + warp(U(phi), w)``; at ``L``: ``w = residual(L, Fb[L], warp(Fa[L], phi))``,
    ``phi = w + warp(phi, w)``.

    Args:
        residual: ``(level, feat_b (C, *S_l), feat_a (C, *S_l)) -> (ndim, *S_l)``.
        pyramid_a: View a's features per level, ``(C_l, *S_l)``, coarse to fine.
        pyramid_b: View b's features, same shapes.

    Returns:
        ``(ndim, *S_L)`` field.
    """
    phi = None
    last = len(pyramid_a) - 1
    for level, (fa, fb) in enumerate(zip(pyramid_a, pyramid_b, strict=True)):
        ka = fa if phi is None else warp(fa, phi)
        w = residual(level, fb, ka)
        if level < last:
            w = upsample2_field(w)
            phi = w if phi is None else w + warp(upsample2_field(phi), w)
        else:
            phi = w if phi is None else w + warp(phi, w)
    return phi


def loop_nt_xent(z_a, z_b, t: float, weights=None) -> tuple[float, float]:
    """Plain loop: every valid embedding is an anchor, its partner the positive, other valid ones negatives."""
    m = z_a.shape[0]
    w = [1.0] * m if weights is None else [float(v) for v in weights]
    z = [F.normalize(v, dim=0) for v in list(z_a) + list(z_b)]
    valid = w + w
    total, hits, count = 0.0, 0, 0
    for i in range(2 * m):
        if not valid[i]:
            continue
        partner = (i + m) % (2 * m)
        sims = {j: float(z[i] @ z[j]) / t for j in range(2 * m) if j != i and valid[j]}
        denominator = sum(math.exp(s) for s in sims.values())
        total += -(sims[partner] - math.log(denominator))
        hits += max(sims, key=sims.get) == partner
        count += 1
    return total / count, hits / count
