"""Smoke tests of the scripts under ``benchmarks/`` on tiny cases (they are run by hand for the results)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_train_step_breakdown_splits_operator_time_and_derives_the_ceilings():
    out = run_script(
        "bench_train_step.py", "--threads", "1", "--repeats", "1", "--breakdown",
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
    assert re.search(r"matrix product on this CPU: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s", out)
