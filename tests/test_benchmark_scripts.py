"""Smoke tests of the scripts under ``benchmarks/`` on tiny cases (they are run by hand for the results)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_train_step_breakdown_splits_operator_time_and_derives_the_ceilings():
    out = run_script(
        "bench_train_step.py", "--threads", "1", "--repeats", "1", "--breakdown", "--matmul-size", "256",
        "--cases", "2:32:1:none:loop", "2:32:1:bf16:fast",
    )  # fmt: skip
    row = r"^\| (2:32:1:\S+) \| (\d+) \| (\d+) \| (\d+) \| (\S+) \| (\S+) \|$"
    rows = {m[0]: m[1:] for m in re.findall(row, out, re.M)}
    assert set(rows) == {"2:32:1:none:loop", "2:32:1:bf16:fast"}
    for total, convolution, other, *_ in rows.values():
        assert abs(int(total) - int(convolution) - int(other)) <= 1  # rounded milliseconds
        assert int(convolution) > 0 and int(other) > 0
    assert rows["2:32:1:none:loop"][3:] == ("-", "-")  # the reference row has no ceiling
    baseline_total = int(rows["2:32:1:none:loop"][0])
    ceiling = float(rows["2:32:1:bf16:fast"][3].rstrip("x"))
    assert abs(ceiling - baseline_total / int(rows["2:32:1:bf16:fast"][1])) < 0.1
    assert re.search(r"256x256 matrix product on this CPU: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s", out)


@pytest.mark.slow
def test_memory_estimate_is_within_20_percent_of_memtracker_and_fake_peaks_are_real(tmp_path):
    """The paper's U-Net in both MoV schedules; ``gpu_check --smoke`` (below) checks bf16, on a tiny model.

    ``--real`` runs the same step on real tensors: MemTracker's fake-tensor peak must be the real one.
    """
    cases = ["2:32:2:fp32:fused", "3:16:1:fp32:chunked"]
    run_script("bench_memory.py", "--cases", *cases, "--real", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert [r["case"] for r in rows] == cases
    for row in rows:
        assert 0.8 <= row["ratio"] <= 1.2, row
        assert row["real_memtracker_gib"] == pytest.approx(row["memtracker_gib"], rel=0.01), row
        assert row["real_rss_gib"] > 0.9 * row["real_memtracker_gib"], row  # the process holds at least its tensors
    assert "| 2:32:2:fp32:fused |" in (tmp_path / "memory.md").read_text()


def test_gpu_check_smoke_runs_every_section_on_any_device(tmp_path):
    """``gpu_check.py --smoke``: steps, memory, data path, cuda tests, COVER vs scratch, all recorded."""
    run_script("gpu_check.py", "--smoke", "--device", "cpu", "--out", str(tmp_path))
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["environment"]["torch"] == __import__("torch").__version__
    variants = [row["variant"] for row in results["steps"]]
    assert variants == ["fp32", "bf16", "bf16+channels-last", "bf16+compile"] * 2
    assert all(
        row["kernels_per_step"] > 0 and row["seconds_per_step"] > 0 for row in results["steps"] if "error" not in row
    )
    memory = [(row["amp"], 0.8 <= row["ratio"] <= 1.2) for row in results["memory"]]
    assert memory == [("fp32", True), ("bf16", True)]  # 2D fp32, 3D bf16 against MemTracker
    assert [row["workers"] for row in results["data"]] == [0, 2] and results["data"][1]["samples"] == 8
    assert results["cuda_tests"]["returncode"] in (0, 5)  # 5: every test skipped (no CUDA here)
    assert results["comparison"]["returncode"] == 0 and "cover" in results["comparison"]["results_md"]
    assert "## COVER against scratch" in (tmp_path / "gpu_check.md").read_text()
