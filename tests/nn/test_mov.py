import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import cover.nn.mov as mov
from cover.nn.mov import MixtureOfVectors, mixture_of_vectors
from cover.nn.mov_reference import loop_mov, unfold_mov

SCHEDULES = ("fused", "chunked")


def assert_matches_oracle(
    q: torch.Tensor, k: torch.Tensor, heads: int, radius: int, atol: float, schedule: str = "auto"
) -> torch.Tensor:
    """The fast MoV's output and input gradients equal the loop oracle's; returns the output."""
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    fast, slow = mixture_of_vectors(q, k, heads, radius, schedule), loop_mov(q, k, heads, radius)
    torch.testing.assert_close(fast, slow, atol=atol, rtol=0)
    weight = torch.randn_like(fast)
    grad_fast = torch.autograd.grad((fast * weight).sum(), (q, k))
    grad_slow = torch.autograd.grad((slow * weight).sum(), (q, k))
    for a, b in zip(grad_fast, grad_slow, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    return fast


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize(
    "spatial,heads,radius",
    [((9, 7), 4, 2), ((6, 6), 1, 1), ((8, 5), 2, 3), ((5, 6, 4), 4, 1), ((4, 5, 6), 1, 2)],
)
def test_mov_matches_loop_oracle_with_gradients(spatial, heads, radius, schedule):
    torch.manual_seed(0)
    q = torch.randn(2, heads * 8, *spatial, dtype=torch.float64)
    k = torch.randn(2, heads * 8, *spatial, dtype=torch.float64)
    fast = assert_matches_oracle(q, k, heads, radius, atol=1e-5, schedule=schedule)
    assert fast.shape == (2, len(spatial), *spatial)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_mov_float32_matches_oracle(schedule):
    torch.manual_seed(1)
    q, k = torch.randn(1, 32, 12, 10), torch.randn(1, 32, 12, 10)
    torch.testing.assert_close(mixture_of_vectors(q, k, 4, 2, schedule), loop_mov(q, k, 4, 2), atol=1e-5, rtol=0)


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
    assert_matches_oracle(q, k, heads, radius, atol=1e-10, schedule="chunked")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("shape,heads", [((2, 32, 20, 17), 4), ((2, 16, 9, 6, 7), 2)])
def test_mov_float32_gradients_match_oracle_to_1e5(schedule, shape, heads):
    torch.manual_seed(4)
    assert_matches_oracle(torch.randn(*shape), torch.randn(*shape), heads, 2, atol=1e-5, schedule=schedule)


@pytest.mark.parametrize("shape,heads,radius", [((2, 16, 11, 9), 2, 2), ((1, 16, 7, 5, 6), 2, 1)])
def test_fused_mov_in_slabs_matches_the_oracle(monkeypatch, shape, heads, radius):
    # A budget below one slice of the first axis makes every slice its own slab (2D: 11 slabs).
    monkeypatch.setattr(mov, "FUSED_CHUNK_ELEMENTS", 1)
    torch.manual_seed(7)
    q, k = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    assert_matches_oracle(q, k, heads, radius, atol=1e-10, schedule="fused")


def test_auto_schedule_is_fused_on_gpus_and_the_measured_one_on_cpus():
    assert mov.resolve_schedule("auto", torch.device("cuda", 0)) == "fused"
    assert mov.resolve_schedule("auto", torch.device("meta")) == "fused"
    assert mov.resolve_schedule("auto", torch.device("cpu")) == mov.CPU_SCHEDULE
    assert mov.resolve_schedule("chunked", torch.device("cuda")) == "chunked"
    with pytest.raises(ValueError, match="'tiled' is unknown"):
        mov.resolve_schedule("tiled", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown"):
        MixtureOfVectors(2, 8, 1, schedule="tiled")


def test_pin_schedules_gives_a_copy_the_schedule_of_the_device_it_stands_for():
    model = torch.nn.Sequential(MixtureOfVectors(2, 8, 1), MixtureOfVectors(2, 8, 1, schedule="chunked"))
    mov.pin_schedules(model, torch.device("cuda", 0))
    assert [m.schedule for m in model] == ["fused", "chunked"]  # a schedule the user chose is kept
    model[0].schedule = "auto"
    mov.pin_schedules(model, torch.device("cpu"))
    assert [m.schedule for m in model] == [mov.CPU_SCHEDULE, "chunked"]


def fused_op_count(shape: tuple[int, ...], heads: int, radius: int) -> int:
    """ATen operations (metadata queries aside) of one fused MoV forward + backward, on fake tensors."""
    with FakeTensorMode():
        q, k = torch.randn(shape, requires_grad=True), torch.randn(shape, requires_grad=True)
        with CountOps() as counter:
            out = mixture_of_vectors(q, k, heads, radius, "fused")
            torch.autograd.grad(out, (q, k), torch.ones_like(out))
    return counter.total


class CountOps(TorchDispatchMode):
    """Counts the ATen operations dispatched while active (``prim`` metadata queries aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        self.total += func.namespace != "prim"
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("spatial", [(24, 20), (12, 10, 8)])
def test_fused_mov_op_count_does_not_grow_with_channels_heads_batch_or_size(spatial):
    # A GPU launches a kernel per operation: the fused schedule must issue the same few whatever
    # the channels, heads, batch and image size (one slab), and a few more per extra slab.
    small = fused_op_count((1, 8, *spatial), 1, 2)
    assert small <= (70 if len(spatial) == 2 else 80)
    assert fused_op_count((3, 64, *spatial), 4, 2) == small
    assert fused_op_count((2, 16, *[2 * s for s in spatial]), 2, 1) == small
    per_slice = 2 * 16 * 5 ** len(spatial) * math.prod(spatial[1:])
    with pytest.MonkeyPatch.context() as patch:  # exactly 4 slabs of 6 / 3 first-axis slices
        patch.setattr(mov, "FUSED_CHUNK_ELEMENTS", per_slice * spatial[0] // 4)
        slabs = fused_op_count((2, 16, *spatial), 2, 2)
    assert small < slabs <= small + 3 * 40


@pytest.mark.slow  # inductor compiles C++ kernels: 475 s wall on the shared 2-core machine (load 20)
def test_fused_mov_under_torch_compile_equals_eager():
    torch.manual_seed(8)
    q = torch.randn(2, 16, 10, 7, requires_grad=True)
    k = torch.randn(2, 16, 10, 7, requires_grad=True)
    compiled = torch.compile(mixture_of_vectors, fullgraph=True)
    out = compiled(q, k, 2, 2, "fused")
    torch.testing.assert_close(out, mixture_of_vectors(q, k, 2, 2, "fused"), atol=1e-5, rtol=0)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), (q, k))
    want = torch.autograd.grad((loop_mov(q, k, 2, 2) * weight).sum(), (q, k))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_unfold_reference_matches_loop_oracle():
    torch.manual_seed(5)
    q, k = torch.randn(1, 16, 7, 6, 5), torch.randn(1, 16, 7, 6, 5)
    torch.testing.assert_close(unfold_mov(q, k, 2, 1), loop_mov(q, k, 2, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 5)])
def test_mov_under_bf16_autocast_is_float32_and_close(spatial, schedule):
    torch.manual_seed(6)
    module = MixtureOfVectors(len(spatial), 12, heads=2, head_dim=8, radius=2, schedule=schedule)
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
