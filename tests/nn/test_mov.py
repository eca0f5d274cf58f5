import pytest
import torch

import cover.nn.mov as mov
from cover.nn.mov import MixtureOfVectors, mixture_of_vectors
from cover.nn.mov_reference import loop_mov, unfold_mov


def assert_matches_oracle(q: torch.Tensor, k: torch.Tensor, heads: int, radius: int, atol: float) -> torch.Tensor:
    """The fast MoV's output and input gradients equal the loop oracle's; returns the output."""
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    fast, slow = mixture_of_vectors(q, k, heads, radius), loop_mov(q, k, heads, radius)
    torch.testing.assert_close(fast, slow, atol=atol, rtol=0)
    weight = torch.randn_like(fast)
    grad_fast = torch.autograd.grad((fast * weight).sum(), (q, k))
    grad_slow = torch.autograd.grad((slow * weight).sum(), (q, k))
    for a, b in zip(grad_fast, grad_slow, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    return fast


@pytest.mark.parametrize(
    "spatial,heads,radius",
    [((9, 7), 4, 2), ((6, 6), 1, 1), ((8, 5), 2, 3), ((5, 6, 4), 4, 1), ((4, 5, 6), 1, 2)],
)
def test_mov_matches_loop_oracle_with_gradients(spatial, heads, radius):
    torch.manual_seed(0)
    q = torch.randn(2, heads * 8, *spatial, dtype=torch.float64)
    k = torch.randn(2, heads * 8, *spatial, dtype=torch.float64)
    fast = assert_matches_oracle(q, k, heads, radius, atol=1e-5)
    assert fast.shape == (2, len(spatial), *spatial)


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


@pytest.mark.parametrize(
    "shape,heads,radius",
    [((2, 16, 40, 33), 2, 3), ((1, 8, 10, 9, 11), 1, 1), ((1, 16, 7, 12, 9), 2, 2)],
)
@pytest.mark.parametrize("keep_bytes", [0, 2**30])
def test_mov_small_chunks_match_the_oracle(monkeypatch, shape, heads, radius, keep_bytes):
    # Tiny chunks force many chunks and slides of the backward buffer; keep_bytes=0 forces the
    # recompute path that large 3D inputs take, 2**30 the stored-weights path.
    monkeypatch.setattr(mov, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(mov, "KEEP_WEIGHTS_BYTES", keep_bytes)
    grid = mov._grid(shape[2:], radius)
    assert grid.size > 2 * (2 * grid.center) + 3 * 64  # the sliding buffer must slide
    torch.manual_seed(3)
    q, k = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    assert_matches_oracle(q, k, heads, radius, atol=1e-10)


def test_mov_float32_gradients_match_oracle_to_1e5():
    torch.manual_seed(4)
    assert_matches_oracle(torch.randn(2, 32, 20, 17), torch.randn(2, 32, 20, 17), 4, 2, atol=1e-5)


def test_unfold_reference_matches_loop_oracle():
    torch.manual_seed(5)
    q, k = torch.randn(1, 16, 7, 6, 5), torch.randn(1, 16, 7, 6, 5)
    torch.testing.assert_close(unfold_mov(q, k, 2, 1), loop_mov(q, k, 2, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 5)])
def test_mov_under_bf16_autocast_is_float32_and_close(spatial):
    torch.manual_seed(6)
    module = MixtureOfVectors(len(spatial), 12, heads=2, head_dim=8, radius=2)
    feat_b = torch.randn(2, 12, *spatial)
    feat_a = (feat_b + 0.3 * torch.randn_like(feat_b)).requires_grad_()
    reference = module(feat_b, feat_a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(feat_b, feat_a)
    assert low.dtype == torch.float32  # the readout runs in float32 even when the projection is bf16
    assert (low - reference).abs().mean() < 0.05 and (low - reference).abs().max() < 0.5
    low.sum().backward()
    assert feat_a.grad is not None and feat_a.grad.dtype == torch.float32 and torch.isfinite(feat_a.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_mov_rejects_bad_shapes():
    with pytest.raises(ValueError, match="do not split"):
        mixture_of_vectors(torch.zeros(1, 10, 4, 4), torch.zeros(1, 10, 4, 4), 4, 1)
    with pytest.raises(ValueError, match="differ in shape"):
        mixture_of_vectors(torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 4, 5), 1, 1)
