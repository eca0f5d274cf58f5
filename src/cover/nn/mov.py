"""MoV: Mixture of Vectors, the displacement read off a window of feature similarities (docs/method.md §5).

For query features ``q`` (view b) and key features ``k`` (view a), both ``(B, J*d, *S)``,
split into ``J`` heads of ``d`` channels; for every voxel ``p``, head ``j`` and offset ``o`` in
the window ``{-r..r}^ndim``::

    s_j(p, o) = <q_j(p), k_j(p + o)> / sqrt(d)      (offsets outside the image masked out)
    w_j(p, .) = softmax_o s_j(p, .)
    v_j(p)    = sum_o w_j(p, o) o
    u(p)      = mean_j v_j(p)

Two schedules compute this (same result to float rounding; one code path each for 2D and 3D),
chosen by ``schedule`` / the model setting ``mov_schedule`` (:func:`resolve_schedule`):

* ``fused`` (:func:`_fused_mov`, the default off the CPU): a handful of whole-tensor operations
  on ``unfold`` views of the padded keys, differentiated by autograd, so a GPU gets a few large
  kernels per level instead of thousands of small ones, and ``torch.compile`` traces it whole.
  Its one large temporary, the ``(B*J, d, *S, W)`` product of queries and windows, is bounded
  by :data:`FUSED_CHUNK_ELEMENTS` (slabs along the first axis past it).
* ``chunked`` (:class:`_MoVFunction`, the default on a CPU, where it is at least as fast):
  cache-sized chunks with a hand-scheduled backward, described below. ``torch.compile``
  leaves it out of the graph.

Operation counts, memory and CPU step times of both: ``benchmarks/RESULTS.md`` ("MoV schedules").

How the chunked kernel works:

* ``q`` and ``k`` are zero-padded by ``r`` on every side and flattened to ``(B*J, d, Np)``.
  A voxel ``p`` is addressed by its *window origin* ``P = sum_i p_i * stride_i`` in the padded
  grid, so the window of every voxel in a run of consecutive origins is one strided view of the
  padded keys, ``(B*J, d, *[2r+1]*ndim, n)`` with the origins innermost and contiguous. Origins
  that fall in the padding of an axis (``p_i >= S_i``) are computed and thrown away (a few
  percent of the work).
* Origins are processed in chunks sized to stay in cache, with preallocated buffers. Scores are
  accumulated channel by channel into a ``(B*J, W, n)`` buffer (no ``(B, C, *S, W)`` copy of
  the windows is ever made), the separable border mask is added as a ``-inf`` bias and the
  softmax runs in float32; the vectors are one matmul with the offsets.
* Backward: ``ds = w * (g.o - g.v_j) / J``; ``grad_q`` is the same windowed contraction of
  ``ds`` against ``k``, and ``grad_k`` (the adjoint of the window gather) is a gather too:
  ``grad_k(p) = sum_o ds(p - o, o) q(p - o)``, read through a strided view of ``ds`` stored
  with reversed offsets in a sliding buffer over the padded grid. The weights ``w`` are kept
  from the forward pass when small (``KEEP_WEIGHTS_BYTES``) and recomputed chunk by chunk
  otherwise, so a large 3D MoV needs little more memory than its inputs.

Its Python loops run over chunks and channels, never over window offsets. In both schedules,
inputs in bf16/fp16 (autocast) are computed in float32; the result is float32.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F  # noqa: N812

# Elements of one (B*J, W, n) work buffer per chunk (2**19 float32 = 2 MiB): sized for the cache.
CHUNK_ELEMENTS = 2**19
# The forward pass keeps the softmax weights for backward when they take at most this many bytes;
# larger ones (big 3D levels) are recomputed chunk by chunk, which keeps the MoV's memory near its inputs'.
KEEP_WEIGHTS_BYTES = 256 * 2**20
# Channels contracted per step in the backward pass (the product buffer holds this many chunks).
PRODUCT_GROUP = 1


def window_offsets(radius: int, spatial_dims: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The window template ``{-r..r}^ndim`` in row-major order.

    Args:
        radius: ``r``.
        spatial_dims: ``ndim``.
        device: Device of the result.

    Returns:
        ``(W, ndim)`` float offsets, ``W = (2r + 1)**ndim``; row ``i`` is the ``i``-th window
        position in C order (last axis fastest).
    """
    axis = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    grids = torch.meshgrid(*([axis] * spatial_dims), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


@dataclass(frozen=True)
class _Grid:
    """Index arithmetic of the padded, flattened grid (all counts in voxels)."""

    spatial: tuple[int, ...]  # S
    radius: int  # r
    padded: tuple[int, ...]  # S + 2r per axis
    strides: tuple[int, ...]  # flat stride of each padded axis
    size: int  # Np, voxels in the padded grid
    origins: int  # number of window origins 0 .. P(S - 1)
    center: int  # flat shift from a window's origin to its centre, P(r, ..., r)

    @property
    def width(self) -> int:
        return 2 * self.radius + 1

    @property
    def window(self) -> int:
        return self.width ** len(self.spatial)

    def view_windows(self, x: torch.Tensor, start: int, count: int) -> torch.Tensor:
        """Windows of ``count`` consecutive origins from ``start``.

        Args:
            x: ``(N, C, Np)`` contiguous padded grid.
            start: First origin.
            count: Number of origins ``n``.

        Returns:
            Strided view ``(N, C, *[2r+1]*ndim, n)`` (no copy).
        """
        size = (x.shape[0], x.shape[1], *([self.width] * len(self.spatial)), count)
        stride = (x.stride(0), x.stride(1), *self.strides, 1)
        return x.as_strided(size, stride, x.storage_offset() + start)

    def to_spatial(self, x: torch.Tensor) -> torch.Tensor:
        """View ``(..., origins)`` values at the voxels only: ``(..., *S)`` (no copy)."""
        lead = x.shape[:-1]
        step = x.stride(-1)
        return x.as_strided((*lead, *self.spatial), (*x.stride()[:-1], *[step * s for s in self.strides]))

    def bias(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Per-axis score bias ``(ndim, 2r+1, origins)``: 0, or ``-inf`` where offset ``o_i`` leaves axis ``i``.

        The window mask is separable: the bias of offset ``o`` is the sum over axes. Origins in
        the padding (not voxels) get no ``-inf`` so that their (discarded) softmax stays finite.
        """
        ndim, width = len(self.spatial), self.width
        origin = torch.arange(self.origins, device=device)
        shift = torch.arange(width, device=device).view(width, 1) - self.radius
        coords = [(origin // self.strides[axis]) % self.padded[axis] for axis in range(ndim)]
        voxel = torch.stack([c < s for c, s in zip(coords, self.spatial, strict=True)]).all(dim=0)
        bias = torch.zeros((ndim, width, self.origins), device=device, dtype=dtype)
        for axis in range(ndim):
            target = coords[axis] + shift  # (w, origins)
            outside = ((target < 0) | (target >= self.spatial[axis])) & voxel
            bias[axis].masked_fill_(outside, float("-inf"))
        return bias


@lru_cache(maxsize=64)
def _grid(spatial: tuple[int, ...], radius: int) -> _Grid:
    padded = tuple(s + 2 * radius for s in spatial)
    strides = tuple(math.prod(padded[i + 1 :]) for i in range(len(padded)))
    origins = sum((s - 1) * t for s, t in zip(spatial, strides, strict=True)) + 1
    return _Grid(spatial, radius, padded, strides, math.prod(padded), origins, radius * sum(strides))


def _chunk(rows: int, window: int) -> int:
    """Origins per chunk so that one ``(rows, window, n)`` buffer holds about ``CHUNK_ELEMENTS``."""
    return max(64, CHUNK_ELEMENTS // (rows * window))


def _chunk_of(flat: torch.Tensor, rows: int, window: int, start: int, count: int) -> torch.Tensor:
    """The contiguous ``(rows, window, count)`` block of origins ``start…`` in a chunk-major buffer."""
    return flat[rows * window * start : rows * window * (start + count)].view(rows, window, count)


class _Workspace:
    """Chunk-sized buffers reused by every chunk (no allocation inside the chunk loops).

    Args:
        like: Tensor giving dtype and device.
        rows: ``B*J``.
        window: ``W``.
        step: Origins per chunk.
        dim: Channels per head ``d``.
    """

    def __init__(self, like: torch.Tensor, rows: int, window: int, step: int, dim: int) -> None:
        size = rows * window * step
        self.scores = like.new_empty(size)
        self.weights = like.new_empty(size)
        self.mask = like.new_empty(window * step)
        self.product = like.new_empty(size * max(1, min(dim, PRODUCT_GROUP)))

    @staticmethod
    def take(buffer: torch.Tensor, *shape: int) -> torch.Tensor:
        """A contiguous view of the first ``prod(shape)`` elements."""
        return buffer[: math.prod(shape)].view(shape)


def _contract(windows: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, buffer: torch.Tensor) -> None:
    """``out[:, c] = sum over the window of windows[:, c] * weights``, a few channels at a time.

    Args:
        windows: ``(B*J, d, *w, n)`` window view.
        weights: ``(B*J, *w, n)`` contiguous.
        out: ``(B*J, d, n)`` destination (may be a strided slice).
        buffer: Flat work buffer; its size sets how many channels go per step.
    """
    rows, dim, count = windows.shape[0], windows.shape[1], windows.shape[-1]
    size = weights.numel()
    group = max(1, min(dim, buffer.numel() // size))
    for first in range(0, dim, group):
        last = min(dim, first + group)
        product = buffer[: (last - first) * size].view(rows, last - first, *weights.shape[1:])
        torch.mul(windows[:, first:last], weights.unsqueeze(1), out=product)
        torch.sum(product.view(rows, last - first, -1, count), dim=2, out=out[:, first:last])


def _weights(
    grid: _Grid,
    qc: torch.Tensor,
    kc: torch.Tensor,
    bias: torch.Tensor,
    start: int,
    count: int,
    work: _Workspace,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax window weights of ``count`` consecutive origins.

    Args:
        grid: Grid arithmetic.
        qc: ``(B*J, d, Np)`` padded queries, pre-scaled by ``1/sqrt(d)``.
        kc: ``(B*J, d, Np)`` padded keys.
        bias: ``(ndim, 2r+1, origins)`` from :meth:`_Grid.bias`.
        start: First origin.
        count: Number of origins ``n``.
        work: Buffers.
        out: Contiguous ``(B*J, W, n)`` destination; default a view of ``work.weights``.

    Returns:
        ``(B*J, W, n)`` weights (``out``).
    """
    rows, dim = qc.shape[:2]
    ndim, width = len(grid.spatial), grid.width
    keys = grid.view_windows(kc, start, count)  # (BJ, d, *w, n)
    queries = qc[:, :, start + grid.center : start + grid.center + count].reshape(rows, dim, *([1] * ndim), count)
    # The (separable) window mask as one (W, n) bias, then scores = bias + sum_c k_c q_c.
    mask = work.take(work.mask, *([width] * ndim), count)
    axis_bias = [
        bias[axis, :, start : start + count].view(*[width if a == axis else 1 for a in range(ndim)], count)
        for axis in range(ndim)
    ]
    mask.copy_(axis_bias[0])
    for extra in axis_bias[1:]:
        mask.add_(extra)
    scores = work.take(work.scores, rows, *([width] * ndim), count)
    key_channels, query_channels = keys.unbind(1), queries.unbind(1)
    torch.addcmul(mask, key_channels[0], query_channels[0], out=scores)
    for c in range(1, dim):  # channels, not offsets: each step covers the whole window
        scores.addcmul_(key_channels[c], query_channels[c])
    weights = work.take(work.weights, rows, grid.window, count) if out is None else out
    return torch._softmax(scores.view(rows, grid.window, count), 1, False, out=weights)


class _MoVFunction(torch.autograd.Function):
    """Fused MoV forward/backward on the padded flat grid (see the module docstring)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:  # noqa: D102
        batch, channels, *spatial = query.shape
        ndim, dim = len(spatial), channels // heads
        rows = batch * heads
        grid = _grid(tuple(spatial), radius)
        qc, kc = _padded(query, grid, rows, 1.0 / math.sqrt(dim)), _padded(key, grid, rows)
        bias = grid.bias(query.device, query.dtype)
        offsets_t = window_offsets(radius, ndim, device=query.device).to(query.dtype).T.contiguous()
        vectors = query.new_empty(rows, ndim, grid.origins)
        step = min(_chunk(rows, grid.window), grid.origins)
        work = _Workspace(query, rows, grid.window, step, 1)
        needs_grad = any(ctx.needs_input_grad[:2])
        keep = needs_grad and rows * grid.window * grid.origins * query.element_size() <= KEEP_WEIGHTS_BYTES
        # Kept weights are stored chunk after chunk, each chunk a contiguous (B*J, W, n) block.
        stored = query.new_empty(rows * grid.window * grid.origins) if keep else None
        for start in range(0, grid.origins, step):
            count = min(step, grid.origins - start)
            out = None if stored is None else _chunk_of(stored, rows, grid.window, start, count)
            weights = _weights(grid, qc, kc, bias, start, count, work, out)
            vectors[:, :, start : start + count] = torch.matmul(offsets_t, weights)  # (no out=: slow into views)
        ctx.save_for_backward(qc, kc, vectors, stored)
        ctx.heads, ctx.radius, ctx.step = heads, radius, step
        field = vectors.view(batch, heads, ndim, grid.origins).mean(dim=1)
        return grid.to_spatial(field).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:  # noqa: D102
        qc, kc, vectors, stored = ctx.saved_tensors
        with _no_autocast(grad.device):
            grad_q, grad_k = _backward(qc, kc, vectors, stored, grad.to(qc.dtype), ctx.heads, ctx.radius, ctx.step)
        return grad_q, grad_k, None, None


def _no_autocast(device: torch.device) -> AbstractContextManager:
    """Autocast switched off on ``device`` (nothing to switch off where autocast does not exist: ``meta``)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def _padded(x: torch.Tensor, grid: _Grid, rows: int, scale: float = 1.0) -> torch.Tensor:
    """``scale * x`` zero-padded by ``r`` on every side, as ``(B*J, d, Np)`` (one allocation)."""
    out = x.new_zeros(x.shape[0], x.shape[1], *grid.padded)
    inner = out[(slice(None), slice(None), *[slice(grid.radius, grid.radius + s) for s in grid.spatial])]
    if scale == 1.0:
        inner.copy_(x)
    else:
        torch.mul(x, scale, out=inner)
    return out.view(rows, -1, grid.size)


def _score_gradient(
    weights: torch.Tensor,
    g: torch.Tensor,
    vectors: torch.Tensor,
    offsets: torch.Tensor,
    heads: int,
    work: _Workspace,
) -> torch.Tensor:
    """Score gradients ``ds = w * (g.o - g.v_j)`` of one chunk of origins.

    Args:
        weights: ``(B*J, W, n)`` softmax weights of the chunk.
        g: ``(B, ndim, n)`` output gradient divided by ``J`` at the chunk's origins.
        vectors: ``(B*J, ndim, n)`` per-head vectors of the forward pass.
        offsets: ``(W, ndim)`` window offsets.
        heads: ``J``.
        work: Buffers (the result is a view of ``work.weights``).

    Returns:
        ``(B*J, W, n)`` score gradients.
    """
    batch, ndim, count = g.shape
    rows, window = weights.shape[:2]
    along = torch.matmul(offsets, g)  # (B, W, n): g.o
    dots = (vectors.view(batch, heads, ndim, count) * g.unsqueeze(1)).sum(2, keepdim=True)
    factor = work.take(work.product, batch, heads, window, count)
    torch.sub(along.unsqueeze(1), dots, out=factor)  # g.o - g.v_j
    return torch.mul(weights, factor.view(rows, window, count), out=work.take(work.weights, rows, window, count))


class _KeyGradientGather:
    """``grad_k(p) = sum_o ds(p - o, o) q(p - o)`` (the adjoint of the window gather) as a gather.

    The score gradients of each chunk are written, offsets reversed, at their window centres
    into a sliding buffer over the padded grid (positions ``[base, base + capacity)``); the
    gather at origin ``P`` reads positions ``P .. P + reach`` of it, so it trails the writes by
    the window's reach and no full ``(B*J, W, Np)`` array is ever allocated.

    Args:
        grid: Grid arithmetic.
        qc: ``(B*J, d, Np)`` padded, pre-scaled queries.
        grad_k: ``(B*J, d, origins)`` destination.
        work: Buffers (``scores`` and ``product`` are used between writes).
        step: Origins per chunk.
    """

    def __init__(self, grid: _Grid, qc: torch.Tensor, grad_k: torch.Tensor, work: _Workspace, step: int) -> None:
        rows, _, size = qc.shape
        ndim, window, width, center = len(grid.spatial), grid.window, grid.width, grid.center
        self.grid, self.qc, self.grad_k, self.work, self.step, self.size = grid, qc, grad_k, work, step, size
        self.reach = 2 * center  # a gather at origin P reads buffer positions P .. P + reach
        self.reverse = torch.arange(window - 1, -1, -1, device=qc.device)
        self.w_shape = (rows, *([width] * ndim))
        self.capacity = min(size, 2 * self.reach + 3 * step)
        self.trail = qc.new_empty(rows, window, self.capacity)
        self.trail[:, :, :center].zero_()
        self.gather_stride = (
            window * self.capacity,
            *[s + width ** (ndim - 1 - i) * self.capacity for i, s in enumerate(grid.strides)],
            1,
        )
        self.base, self.written, self.done = 0, center, 0

    def add(self, ds: torch.Tensor, start: int, count: int) -> None:
        """Write the ``(B*J, W, n)`` score gradients of origins ``start…`` and gather what they complete."""
        center = self.grid.center
        self._make_room(start + count + center)
        flipped = torch.index_select(ds, 1, self.reverse, out=self.work.take(self.work.scores, *ds.shape))
        self.trail[:, :, start + center - self.base : start + count + center - self.base] = flipped
        self.written = start + count + center
        self._drain()

    def finish(self) -> None:
        """Zero the buffer past the last window centre and gather the remaining origins."""
        self._make_room(self.size)
        self.trail[:, :, self.written - self.base : self.size - self.base].zero_()
        self.written = self.size
        self._drain()

    def _make_room(self, end: int) -> None:
        """Slide the buffer so that positions up to ``end`` fit (keeps what the gather still needs)."""
        if end - self.base <= self.capacity:
            return
        keep = self.written - self.done  # < reach + step <= done - base: the copy never overlaps
        self.trail[:, :, :keep].copy_(self.trail[:, :, self.done - self.base : self.written - self.base])
        self.base = self.done

    def _drain(self) -> None:
        """Gather ``grad_k`` for every origin whose reach is written."""
        origins, work = self.grid.origins, self.work
        while self.done < origins:
            start = self.done
            count = min(self.step, origins - start)
            if start + count + self.reach > self.written:
                return
            gathered = work.take(work.scores, *self.w_shape, count)
            gathered.copy_(self.trail.as_strided((*self.w_shape, count), self.gather_stride, start - self.base))
            windows = self.grid.view_windows(self.qc, start, count)
            _contract(windows, gathered, self.grad_k[:, :, start : start + count], work.product)
            self.done = start + count


def _backward(
    qc: torch.Tensor,
    kc: torch.Tensor,
    vectors: torch.Tensor,
    stored: torch.Tensor | None,
    grad: torch.Tensor,
    heads: int,
    radius: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the MoV with respect to the (unpadded) query and key.

    The weights are read from ``stored`` or recomputed chunk by chunk. Per chunk, the score
    gradients ``ds`` (:func:`_score_gradient`) give ``grad_q`` as the windowed contraction of
    ``ds`` against ``k``, and feed the ``grad_k`` gather (:class:`_KeyGradientGather`).

    Args:
        qc: ``(B*J, d, Np)`` padded, pre-scaled queries.
        kc: ``(B*J, d, Np)`` padded keys.
        vectors: ``(B*J, ndim, origins)`` per-head vectors of the forward pass.
        stored: Weights kept by the forward pass (chunk after chunk, see :func:`_chunk_of`), or
            ``None`` to recompute them.
        grad: ``(B, ndim, *S)`` gradient of the output.
        heads: ``J``.
        radius: ``r``.
        step: Origins per chunk of the forward pass.

    Returns:
        ``(grad_query, grad_key)``, each ``(B, J*d, *S)``.
    """
    rows, dim, _ = qc.shape
    batch, ndim, *spatial = grad.shape
    grid = _grid(tuple(spatial), radius)
    window, origins = grid.window, grid.origins
    offsets = window_offsets(radius, ndim, device=grad.device).to(qc.dtype)
    bias = grid.bias(grad.device, qc.dtype)
    # dL/dw_j(p, o) = g(p).o / J: g on the origins (zero at padding origins).
    g = grad.new_zeros(batch, ndim, origins)
    torch.mul(grad, 1.0 / heads, out=grid.to_spatial(g))
    grad_q = qc.new_empty(rows, dim, origins)
    grad_k = qc.new_empty(rows, dim, origins)
    work = _Workspace(qc, rows, window, step, dim)
    gather = _KeyGradientGather(grid, qc, grad_k, work, step)
    for start in range(0, origins, step):
        count = min(step, origins - start)
        stop = start + count
        if stored is None:
            weights = _weights(grid, qc, kc, bias, start, count, work)  # (BJ, W, n) in work.weights
        else:
            weights = _chunk_of(stored, rows, window, start, count)
        ds = _score_gradient(weights, g[:, :, start:stop], vectors[:, :, start:stop], offsets, heads, work)
        windows = grid.view_windows(kc, start, count)
        _contract(windows, ds.view(*gather.w_shape, count), grad_q[:, :, start:stop], work.product)
        gather.add(ds, start, count)
    gather.finish()
    channels = heads * dim
    grad_query = grid.to_spatial(grad_q.view(batch, channels, origins)) * (1.0 / math.sqrt(dim))
    grad_key = grid.to_spatial(grad_k.view(batch, channels, origins)).contiguous()
    return grad_query, grad_key


#: MoV schedules: ``fused`` (few large operations, for GPUs and ``torch.compile``), ``chunked``
#: (cache-sized chunks, hand-scheduled backward) and ``auto`` (by device, :func:`resolve_schedule`).
SCHEDULES = ("auto", "fused", "chunked")
# What `auto` gives a CPU (measured in benchmarks/RESULTS.md, "MoV schedules").
CPU_SCHEDULE = "chunked"
# Elements of the largest (B*J, d, *s, W) product of the fused schedule (2**27 float32 = 512 MiB);
# larger levels are split into slabs along the first spatial axis.
FUSED_CHUNK_ELEMENTS = 2**27


def resolve_schedule(schedule: str, device: torch.device) -> str:
    """The schedule ``auto`` stands for on ``device``: ``fused`` off the CPU, :data:`CPU_SCHEDULE` on it.

    Args:
        schedule: One of :data:`SCHEDULES`.
        device: Where the MoV runs.

    Returns:
        ``fused`` or ``chunked``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"MoV schedule {schedule!r} is unknown (allowed: {', '.join(SCHEDULES)})")
    if schedule != "auto":
        return schedule
    return CPU_SCHEDULE if device.type == "cpu" else "fused"


def pin_schedules(model: nn.Module, device: torch.device) -> None:
    """Give every :class:`MixtureOfVectors` of ``model`` the schedule ``auto`` stands for on ``device``.

    For a copy that runs elsewhere in place of the model (the memory check's CPU probe of a
    model trained on a GPU): it then computes, and saves for backward, what the model would.
    """
    for module in model.modules():
        if isinstance(module, MixtureOfVectors):
            module.schedule = resolve_schedule(module.schedule, device)


def _window_bias(spatial: tuple[int, ...], radius: int, like: torch.Tensor) -> torch.Tensor:
    """Score bias ``(*S, W)``: 0 where ``p + o`` is inside the image, ``-inf`` outside.

    The padded ones-image's windows are 1 inside and 0 outside; their log is the bias.
    """
    width = 2 * radius + 1
    inside = F.pad(like.new_ones(spatial), [radius] * (2 * len(spatial)))
    for axis in range(len(spatial)):
        inside = inside.unfold(axis, width, 1)
    return inside.log().flatten(len(spatial))


def _fused_mov(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """MoV as a few whole-tensor operations on unfolded windows, differentiated by autograd.

    Every voxel's window of keys is an ``unfold`` view of the padded keys ``(B*J, d, *S, *w)``
    (no copy); the scores are one product with the queries summed over the ``d`` channels. That
    product is materialised in eager mode (``torch.compile`` fuses it into the sum), so levels whose
    product exceeds :data:`FUSED_CHUNK_ELEMENTS` are processed in slabs along the first spatial axis.

    Args:
        query: ``(B, J*d, *S)`` float queries.
        key: ``(B, J*d, *S)`` float keys.
        heads: ``J``.
        radius: ``r``.

    Returns:
        ``(B, ndim, *S)`` displacement.
    """
    batch, channels, *spatial = query.shape
    ndim, dim, width = len(spatial), channels // heads, 2 * radius + 1
    rows = batch * heads
    queries = query.reshape(rows, dim, *spatial) * (1.0 / math.sqrt(dim))
    keys = F.pad(key.reshape(rows, dim, *spatial), [radius] * (2 * ndim))
    bias = _window_bias(tuple(spatial), radius, query)  # (*S, W)
    offsets = window_offsets(radius, ndim, device=query.device).to(query.dtype)  # (W, ndim)
    per_slice = rows * dim * width**ndim * math.prod(spatial[1:])
    slab = max(1, FUSED_CHUNK_ELEMENTS // per_slice)
    parts = []
    for first in range(0, spatial[0], slab):
        last = min(spatial[0], first + slab)
        windows = keys[:, :, first : last + 2 * radius]
        for axis in range(ndim):
            windows = windows.unfold(2 + axis, width, 1)  # (BJ, d, s, *S[1:], *w)
        here = queries[:, :, first:last].reshape(rows, dim, last - first, *spatial[1:], *([1] * ndim))
        scores = (windows * here).sum(1).flatten(ndim + 1) + bias[first:last]  # (BJ, s, *S[1:], W)
        parts.append(torch.softmax(scores, dim=-1) @ offsets)  # (BJ, s, *S[1:], ndim)
    vectors = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return vectors.view(batch, heads, *spatial, ndim).mean(dim=1).movedim(-1, 1)


@torch.compiler.disable  # hand-scheduled (out= buffers, strided views): `--compile` compiles around it
def _chunked_mov(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """The chunked schedule: :class:`_MoVFunction` (see the module docstring)."""
    return _MoVFunction.apply(query, key, heads, radius)


def mixture_of_vectors(
    query: torch.Tensor, key: torch.Tensor, heads: int, radius: int, schedule: str = "auto"
) -> torch.Tensor:
    """Vectorised MoV, with the schedule chosen by ``schedule`` (see the module docstring).

    Args:
        query: ``(B, J*d, *S)`` projected features of view b.
        key: ``(B, J*d, *S)`` projected (and pre-warped) features of view a.
        heads: ``J``.
        radius: Window radius ``r``.
        schedule: ``auto``, ``fused`` or ``chunked`` (:func:`resolve_schedule`); every schedule
            gives the same result.

    Returns:
        Displacement ``u`` of shape ``(B, ndim, *S)`` in voxels of this grid, float32 (float64
        for float64 inputs). Low-precision inputs (autocast) are computed in float32.
    """
    batch, channels, *spatial = query.shape
    dim = channels // heads
    if dim * heads != channels:
        raise ValueError(f"{channels} channels do not split into {heads} heads")
    if key.shape != query.shape:
        raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} differ in shape")
    if len(spatial) not in (2, 3):
        raise ValueError(f"MoV needs 2 or 3 spatial dimensions, got {len(spatial)}")
    kernel = _fused_mov if resolve_schedule(schedule, query.device) == "fused" else _chunked_mov
    dtype = torch.promote_types(torch.promote_types(query.dtype, key.dtype), torch.float32)
    with _no_autocast(query.device):
        return kernel(query.to(dtype), key.to(dtype), heads, radius)


class MixtureOfVectors(nn.Module):
    """One pyramid level's MoV: a shared 1x1 projection + GroupNorm, then the vector readout.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Channels of the backbone features at this level.
        heads: ``J``.
        head_dim: ``d``.
        radius: Window radius ``r``.
        schedule: MoV schedule (:data:`SCHEDULES`).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        heads: int,
        head_dim: int = 8,
        radius: int = 2,
        schedule: str = "auto",
    ) -> None:
        super().__init__()
        resolve_schedule(schedule, torch.device("cpu"))  # rejects unknown names now, not at the first step
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.project = nn.Sequential(conv(in_channels, heads * head_dim, 1), nn.GroupNorm(1, heads * head_dim))
        self.heads = heads
        self.radius = radius
        self.schedule = schedule

    def forward(self, feat_b: torch.Tensor, feat_a: torch.Tensor) -> torch.Tensor:
        """Displacement from view b's features into view a's.

        Args:
            feat_b: ``(B, C, *S)`` features of view b (queries).
            feat_a: ``(B, C, *S)`` features of view a, already warped by the coarser estimate.

        Returns:
            ``(B, ndim, *S)`` displacement in voxels of this level (float32).
        """
        return mixture_of_vectors(self.project(feat_b), self.project(feat_a), self.heads, self.radius, self.schedule)
