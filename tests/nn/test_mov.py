import math

import pytest
import torch

from cover.nn.mov import mixture_of_vectors, window_offsets


def loop_mov(query: torch.Tensor, key: torch.Tensor, heads: int, radius: int) -> torch.Tensor:
    """Plain oracle: one Python iteration per window offset, explicit bounds mask."""
    batch, channels, *spatial = query.shape
    ndim = len(spatial)
    dim = channels // heads
    q = query.reshape(batch, heads, dim, *spatial)
    k = key.reshape(batch, heads, dim, *spatial)
    offsets = window_offsets(radius, ndim).to(query.dtype)
    scores, valid = [], []
    for offset in offsets.long().tolist():
        shifted = torch.zeros_like(k)
        inside = torch.zeros(spatial, dtype=torch.bool)
        dst, src = [], []
        for o, n in zip(offset, spatial):
            dst.append(slice(max(0, -o), n - max(0, o)))
            src.append(slice(max(0, o), n - max(0, -o)))
        shifted[(..., *dst)] = k[(..., *src)]
        inside[tuple(dst)] = True
        scores.append((q * shifted).sum(2) / math.sqrt(dim))
        valid.append(inside)
    scores = torch.stack(scores, -1)
    mask = torch.stack(valid, -1)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1)
    vectors = torch.einsum("bj...w,wn->bj...n", weights, offsets)
    return vectors.mean(1).movedim(-1, 1)


@pytest.mark.parametrize(
    "spatial,heads,radius",
    [((9, 7), 4, 2), ((6, 6), 1, 1), ((8, 5), 2, 3), ((5, 6, 4), 4, 1), ((4, 5, 6), 1, 2)],
)
def test_mov_matches_loop_oracle_with_gradients(spatial, heads, radius):
    torch.manual_seed(0)
    channels = heads * 8
    q = torch.randn(2, channels, *spatial, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, channels, *spatial, dtype=torch.float64, requires_grad=True)
    fast = mixture_of_vectors(q, k, heads, radius)
    slow = loop_mov(q, k, heads, radius)
    assert fast.shape == (2, len(spatial), *spatial)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    weight = torch.randn_like(fast)
    grad_fast = torch.autograd.grad((fast * weight).sum(), (q, k))
    grad_slow = torch.autograd.grad((slow * weight).sum(), (q, k))
    for a, b in zip(grad_fast, grad_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mov_float32_matches_oracle():
    torch.manual_seed(1)
    q, k = torch.randn(1, 32, 12, 10), torch.randn(1, 32, 12, 10)
    torch.testing.assert_close(mixture_of_vectors(q, k, 4, 2), loop_mov(q, k, 4, 2), atol=1e-5, rtol=0)


def test_mov_border_offsets_never_point_outside():
    # Keys that strongly prefer one direction: at the border, the vector must stay inside.
    q = torch.ones(1, 8, 6, 6) * 5.0
    k = torch.zeros(1, 8, 6, 6)
    k[..., :, 5] = 5.0  # the last column matches best
    u = mixture_of_vectors(q, k, 1, 2)
    # Column 5 itself cannot look right (outside): its horizontal displacement is ~0.
    assert u[0, 1, :, 5].abs().max() < 1e-3
    # Column 4 sees column 5 at offset +1 and nothing further right.
    assert torch.allclose(u[0, 1, :, 4], torch.ones(6), atol=1e-3)


def test_mov_recovers_a_known_shift():
    torch.manual_seed(2)
    k = torch.randn(1, 64, 16, 16)  # 64 channels: the true match stands far above chance
    q = torch.roll(k, shifts=(-1, 2), dims=(2, 3)) * 3  # q(p) = k(p + (1, -2)), sharpened
    u = mixture_of_vectors(q, k, 1, 2)
    inner = u[0, :, 3:-3, 3:-3]
    assert torch.allclose(inner[0], torch.ones_like(inner[0]), atol=0.05)
    assert torch.allclose(inner[1], -2 * torch.ones_like(inner[1]), atol=0.05)
