"""CUDA code paths, run where a CUDA device exists (``pytest -m cuda``; skipped elsewhere, saying why).

Each test runs the CPU-tested feature on the GPU and compares with the CPU where results must
agree: MoV against its CPU result, every ``--amp`` mode, ``--compile``, an exact resume, the
memory check against what a step really allocates, and a two-process NCCL run when two GPUs
exist. Sizes stay small so that ``benchmarks/gpu_check.py`` runs all of them in a minute or two.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from cover.engine.logger import read_log
from cover.nn.mov import mixture_of_vectors
from cover.pretraining.pretrain import pretrain

pytestmark = pytest.mark.cuda
TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


def tiny(out, **extra):
    options = {
        "out": str(out), "dim": 2, "size": 32, "batch_size": 4, "steps": 8, "lr": 3e-3, "warmup_steps": 2,
        "log_every": 1, "eval_pairs": 4, "checkpoint_every": 4, "device": "cuda", "model": TINY_MODEL,
        "cudnn_benchmark": False, "tf32": False,
    }  # fmt: skip
    return options | extra


@pytest.mark.parametrize("dims", [(24, 20), (8, 10, 6)])
def test_mov_on_cuda_matches_its_cpu_result_with_gradients(dims):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, *dims, generator=generator, requires_grad=True)
    k = torch.randn(2, 8, *dims, generator=generator, requires_grad=True)
    cpu = mixture_of_vectors(q, k, 2, 1)
    cpu.square().sum().backward()
    q_gpu, k_gpu = q.detach().cuda().requires_grad_(), k.detach().cuda().requires_grad_()
    gpu = mixture_of_vectors(q_gpu, k_gpu, 2, 1)
    gpu.square().sum().backward()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q_gpu.grad.cpu(), q.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(k_gpu.grad.cpu(), k.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16", "auto"])
def test_every_amp_mode_pretrains_on_cuda(tmp_path, amp):
    summary = pretrain(**tiny(tmp_path / "run", amp=amp))
    assert summary["nonfinite_steps"] == 0 and math.isfinite(summary["final_loss"]), summary
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"amp: {amp}" in saved or (amp == "auto" and ("amp: bf16" in saved or "amp: fp16" in saved))


def test_amp_modes_fine_tune_on_cuda(tmp_path):
    from cover.downstream.finetune import finetune

    pretrained = pretrain(**tiny(tmp_path / "pre", steps=4))
    for amp in ("bf16", "fp16"):
        summary = finetune(
            pretrained=pretrained["checkpoint"], out=str(tmp_path / amp), steps=6, val_every=3,
            device="cuda", amp=amp,
        )  # fmt: skip
        assert summary["nonfinite_steps"] == 0 and math.isfinite(summary["final_loss"]), summary


def test_compile_pretrains_on_cuda(tmp_path):
    summary = pretrain(**tiny(tmp_path / "run", compile=True, steps=4))
    assert summary["nonfinite_steps"] == 0 and math.isfinite(summary["final_loss"])


def test_resume_on_cuda_continues_with_the_same_losses(tmp_path):
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        full = tmp_path / "full"
        pretrain(**tiny(full))
        part = tmp_path / "part"
        pretrain(**tiny(part, steps=4))
        pretrain(**tiny(part, resume="auto"))
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = read_log(full / "log.csv"), read_log(part / "log.csv")
    assert a["step"] == b["step"] == list(range(1, 9))
    assert a["loss"][4:] == pytest.approx(b["loss"][4:], rel=1e-4)


def test_memory_check_on_cuda_is_close_to_the_step_and_allocates_nothing(tmp_path):
    from cover.config import resolve_pretrain_config
    from cover.engine.memory import estimate
    from cover.models.networks import build_model
    from cover.views import ViewGenerator

    config = resolve_pretrain_config({"dim": 2, "size": 128, "batch_size": 4, "steps": 1, "device": "cuda"})
    model = build_model(config).cuda()
    optimizer = torch.optim.Adam(model.parameters(), fused=True)

    def forward(twin, probe, batch):
        source = torch.rand(batch, 1, *(round(p * config.views.source_scale) for p in probe))
        return twin(ViewGenerator(config.views, probe)(source, torch.Generator().manual_seed(0)))["loss"]

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    planned = estimate(model, forward, config.size, model.backbone.divisor, 4, "none")
    assert torch.cuda.memory_allocated() == before  # the probe ran on a CPU copy
    torch.cuda.reset_peak_memory_stats()
    source = torch.rand(4, 1, *(round(s * config.views.source_scale) for s in config.size), device="cuda")
    views = ViewGenerator(config.views, config.size)(source, torch.Generator(device="cuda").manual_seed(0))
    model(views)["loss"].backward()
    optimizer.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    assert 0.8 <= planned.total() / peak <= 1.5, (planned.total(), peak)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="cuda: a 2-process NCCL run needs two GPUs")
def test_two_process_nccl_pretraining_keeps_the_replicas_identical(tmp_path):
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "cover", "pretrain", "--devices", "2", "--device", "cuda", "--dim", "2",
            "--size", "32", "--batch-size", "4", "--steps", "4", "--out", str(out), "--channels", "8,16,32,16,8",
            "--heads", "2,2,1", "--head-dim", "4"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and len(set(summary["parameter_digests"])) == 1
