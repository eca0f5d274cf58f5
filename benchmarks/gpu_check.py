"""One command that checks cover on a machine with one GPU and writes what it measured.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu-check      # on the GPU machine (< 8 minutes)
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-check           # tiny sizes, any device (CI)

Sections (each one's failure is recorded and the next one runs):

1. environment: torch, CUDA, cuDNN, the GPU's name and memory;
2. steps: kernels launched (CUDA: profiler kernel events; CPU: aten operations) and seconds
   per pretraining step at the paper's 2D (384^2, batch 24) and 3D (96^3, batch 2) sizes, in
   fp32, bf16, bf16 + channels-last and bf16 + ``torch.compile``; peak memory of the fp32 and
   bf16 steps against the memory check's estimate;
3. data: samples per second of the real data path (a folder of PNG files read through
   :func:`cover.pretraining.pretrain.build_datasets` and a DataLoader) with 0 and 4 workers;
4. cuda tests: ``pytest -m cuda tests/cuda``;
5. COVER against scratch: ``cover benchmark`` on ``mni-regions-2d`` with 20x the pretraining
   compute of the CPU ``default`` preset (600 steps x batch 4 there; 2000 x 24 here), one seed,
   budgets 1 and 8.

``--smoke`` runs every section at tiny sizes (seconds on a CPU; ``torch.compile`` with the
``eager`` backend there, which traces the model without generating code). Results: ``OUT/gpu_check.json``
and ``OUT/gpu_check.md``. A model setting ``mov_schedule`` is passed (``auto``) only when the
installed cover has it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
#: (name, dim, size, batch) of the step timings; smoke sizes after.
PAPER_SIZES = [("2d", 2, 384, 24), ("3d", 3, 96, 2)]
SMOKE_SIZES = [("2d", 2, 32, 2), ("3d", 3, 16, 1)]
SMOKE_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
#: (variant, amp, channels_last, compile).
VARIANTS = [("fp32", "none", False, False), ("bf16", "bf16", False, False),
            ("bf16+channels-last", "bf16", True, False), ("bf16+compile", "bf16", False, True)]  # fmt: skip


def environment(device: torch.device) -> dict:
    """Versions and the device."""
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts |= {"gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1)}
    return facts


def model_values(smoke: bool) -> dict:
    """Model settings: the paper's U-Net (or a tiny one), ``mov_schedule`` where the config has it."""
    from cover.config import ModelConfig

    values = dict(SMOKE_MODEL) if smoke else {}
    if "mov_schedule" in {f.name for f in dataclasses.fields(ModelConfig)}:
        values["mov_schedule"] = "auto"
    return values


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_kernels(step: Callable[[], None], device: torch.device) -> int:
    """Kernels one step launches (CUDA), or aten operations it runs (elsewhere)."""
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            synchronize(device)
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        step()
    return Count.calls


def one_case(dim: int, size: int, batch: int, variant: tuple, device: torch.device, smoke: bool) -> dict:
    """Seconds per step, kernels per step and peak memory of one size and variant."""
    from cover.config import resolve_pretrain_config
    from cover.engine.layout import use_channels_last
    from cover.engine.loop import adam
    from cover.engine.precision import autocast
    from cover.models.networks import build_model
    from cover.views import ViewGenerator

    name, amp, channels_last, compiled = variant
    values = {"dim": dim, "size": size, "batch_size": batch, "steps": 1, "data": "x", "device": device.type,
              "amp": amp, "channels_last": channels_last, "model": model_values(smoke)}  # fmt: skip
    config = resolve_pretrain_config(values)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if channels_last:
        use_channels_last(model, dim)
    # The smoke run traces with dynamo but skips inductor's code generation (minutes of C++ on a CPU).
    network = torch.compile(model, backend="eager" if smoke else "inductor") if compiled else model
    optimizer = adam(model.parameters(), 1e-3, 0.0)
    generator = ViewGenerator(config.views, config.size)
    source = torch.rand(batch, 1, *(round(s * config.views.source_scale) for s in config.size), device=device)

    def step() -> None:
        with torch.no_grad():
            views = generator(source, torch.Generator(device=device).manual_seed(0))
        with autocast(amp, device):
            loss = network(views)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2 if compiled else 1):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    repeats = 1 if smoke else 3
    tic = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - tic) / repeats
    row = {"size": f"{dim}D {size}^{dim} x {batch}", "variant": name, "seconds_per_step": seconds}
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    row["kernels_per_step"] = count_kernels(step, device)
    return row


def steps_section(device: torch.device, smoke: bool) -> list[dict]:
    rows = []
    for _, dim, size, batch in SMOKE_SIZES if smoke else PAPER_SIZES:
        for variant in VARIANTS:
            try:
                rows.append(one_case(dim, size, batch, variant, device, smoke))
            except Exception as error:  # noqa: BLE001 - recorded, the next case runs
                rows.append({"size": f"{dim}D {size}", "variant": variant[0], "error": _short(error)})
            torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def memory_section(device: torch.device, smoke: bool, steps: list[dict]) -> list[dict]:
    """The memory check's estimate against the measured peak (CUDA) or MemTracker (elsewhere)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_memory import estimated_bytes, memtracker_bytes

    from cover.nn.mov import resolve_schedule

    # The paper's U-Net also in the smoke run (with the tiny model, runtime temporaries that do not grow with
    # the batch or the crop dominate the few MiB of a step: 0.45 at 16^3 bf16), the MoV schedule of the steps.
    schedule = resolve_schedule("auto", device)
    rows = []
    cases = [(*SMOKE_SIZES[0][1:], "fp32"), (*SMOKE_SIZES[1][1:], "bf16")] if smoke else [
        (*sizes[1:], amp) for sizes in PAPER_SIZES for amp in ("fp32", "bf16")
    ]  # fmt: skip
    for dim, size, batch, amp in cases:
        estimate = estimated_bytes(dim, size, batch, amp, schedule) / 2**30
        label = f"{dim}D {size}^{dim} x {batch}"
        measured = [r.get("peak_gib") for r in steps if r.get("size") == label and r["variant"] == amp]
        if device.type == "cuda" and measured and measured[0]:
            peak, source = measured[0], "torch.cuda.max_memory_allocated"
        else:
            peak, source = (
                memtracker_bytes(dim, size, batch, amp, schedule) / 2**30,
                "MemTracker (fake tensors)",
            )
        rows.append({"size": label, "amp": amp, "estimate_gib": estimate, "measured_gib": peak,
                     "ratio": estimate / peak, "measured_by": source})  # fmt: skip
    return rows


def data_section(device: torch.device, smoke: bool, folder: Path) -> list[dict]:
    """Samples per second of the real data path (PNG files, decode, normalise, batches) by workers."""
    from PIL import Image
    from torch.utils.data import DataLoader

    from cover.config import resolve_pretrain_config
    from cover.engine.sampler import StepBatchSampler
    from cover.pretraining.pretrain import build_datasets

    count, side, batches = (6, 48, 4) if smoke else (64, 576, 40)
    rng = np.random.default_rng(0)
    for index in range(count):
        image = (rng.random((side, side)) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"image_{index:03d}.png")
    size = 32 if smoke else 384
    rows = []
    for workers in (0, 2 if smoke else 4):
        config = resolve_pretrain_config({"dim": 2, "size": size, "batch_size": 24 if not smoke else 2,
                                          "steps": batches, "data": str(folder), "num_workers": workers})  # fmt: skip
        tic = time.perf_counter()
        train_set, _, _ = build_datasets(config)
        sampler = StepBatchSampler(config.seed, config.batch_size, len(train_set), 0, batches, 0, 1)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda")
        seen = sum(batch.shape[0] for batch in loader)
        rows.append({"workers": workers, "samples": seen, "samples_per_second": seen / (time.perf_counter() - tic)})
    return rows


def cuda_tests_section() -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", str(ROOT / "tests" / "cuda")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return {"returncode": result.returncode, "summary": lines[-1] if lines else "", "tail": lines[-15:]}


def comparison_section(device: torch.device, smoke: bool, out: Path) -> dict:
    """``cover benchmark`` of COVER against scratch on the built-in 2D task (20x the default preset's pretraining)."""
    import yaml

    if smoke:
        pretrain = {"steps": 3, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1}
        extra = {"model": SMOKE_MODEL, "finetune": {"steps": 3, "batch_size": 2, "size": 32, "lr": 2e-3},
                 "pretrain_2d": {"size": 32}, "steps_per_case": 0, "analyze": False}  # fmt: skip
    else:
        pretrain = {"steps": 2000, "batch_size": 24, "lr": 1e-3 * (24 / 4) ** 0.5, "warmup_steps": 100}
        extra = {}
    config = {"preset": "default", "methods": ["scratch", "cover"], "seeds": [0], "pretrain": pretrain,
              "tasks": [{"name": "mni-regions-2d", "budgets": [1] if smoke else [1, 8]}], **extra}  # fmt: skip
    if model_values(smoke).get("mov_schedule"):
        config.setdefault("model", {})["mov_schedule"] = "auto"
    path = out / "comparison.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "cover", "benchmark", "--config", str(path), "--out", str(out / "comparison"),
               "--device", device.type]  # fmt: skip
    tic = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    report = out / "comparison" / "results.md"
    return {"returncode": result.returncode, "seconds": time.perf_counter() - tic,
            "pretraining_samples": pretrain["steps"] * pretrain["batch_size"],
            "results_md": report.read_text()[:4000] if report.exists() else result.stderr[-2000:]}  # fmt: skip


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def markdown(results: dict) -> str:
    """The Markdown report of every section."""
    lines = ["# cover GPU check", "", f"Command: `{' '.join(sys.argv)}`", ""]
    lines += ["## Environment", "", *(f"- {k}: {v}" for k, v in results["environment"].items()), ""]
    for title, key in (("Steps", "steps"), ("Memory", "memory"), ("Data path", "data")):
        rows = results.get(key)
        lines += [f"## {title}", ""]
        if isinstance(rows, list) and rows:
            header = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_cell(r.get(k)) for k in header) + " |" for r in rows]
        else:
            lines.append(f"{rows}")
        lines.append("")
    tests = results.get("cuda_tests", {})
    lines += ["## CUDA tests", "", f"`pytest -m cuda tests/cuda`: {tests.get('summary', tests)}", ""]
    comparison = results.get("comparison", {})
    lines += ["## COVER against scratch", "", comparison.get("results_md", str(comparison)), ""]
    lines += [f"Total seconds: {results['seconds']:.0f}", ""]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else ("" if value is None else str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu-check")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every section in seconds, any device")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    args = parser.parse_args()
    from cover.engine.distributed import resolve_device

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    results: dict = {"environment": environment(device), "smoke": args.smoke}
    sections: list[tuple[str, Callable[[], object]]] = [
        ("steps", lambda: steps_section(device, args.smoke)),
        ("memory", lambda: memory_section(device, args.smoke, results.get("steps", []))),
        ("data", lambda: data_section(device, args.smoke, Path(tempfile.mkdtemp()))),
        ("cuda_tests", cuda_tests_section),
        ("comparison", lambda: comparison_section(device, args.smoke, args.out)),
    ]
    for name, section in sections:
        start = time.perf_counter()
        try:
            results[name] = section()
        except Exception as error:  # noqa: BLE001 - recorded, the next section runs
            results[name] = {"error": _short(error), "traceback": traceback.format_exc()[-2000:]}
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        results["seconds"] = time.perf_counter() - tic
        (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (args.out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
