"""CPU time of one pretraining step of two checkouts of cover at the demo sizes, in alternating processes.

    python benchmarks/bench_step_versions.py --old /tmp/cover-old --rounds 3 --steps 5

For each round and case (the built-in demo's configuration: 2D 64^2 batch 4, 3D 24^3 batch 1,
its model, memory layout and recipe, fp32) one process per checkout runs, with ``PYTHONPATH``
set to that checkout's ``src``, one warm-up step and ``--steps`` timed steps (views under
``no_grad``, forward, backward, gradient clipping, Adam: what ``cover pretrain`` runs per step)
and reports the median process CPU time and wall time per step. The checkouts alternate (old,
new, then new, old in the next round ...), so that a load change on a shared machine affects both
alike; CPU time, not wall time, is the comparison there. The table gives, per case, the median
over rounds of each checkout's medians and the ratio new / old. ``--new`` defaults to this
checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, heading, load_average, markdown_table

CASES = ((2, 64, 4), (3, 24, 1))

# Run in the child process: only API both checkouts share (config, model, views).
CHILD = """
import json, statistics, sys, time
import torch
from cover.config import resolve_pretrain_config
from cover.pretraining.pretrain import build_model, source_size
from cover.views import ViewGenerator
dim, size, batch, steps = map(int, sys.argv[1:5])
torch.set_num_threads(1)
torch.manual_seed(0)
config = resolve_pretrain_config({"dim": dim, "size": size, "batch_size": batch})
model = build_model(config)
layout = (torch.channels_last, torch.channels_last_3d)[dim - 2] if config.channels_last else None
if layout is not None:
    model = model.to(memory_format=layout)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
generator = ViewGenerator(config.views, config.size)
source = torch.rand(batch, config.in_channels, *source_size(config), generator=torch.Generator().manual_seed(0))
def step(seed):
    with torch.no_grad():
        views = generator(source, torch.Generator().manual_seed(seed))
    if layout is not None:
        views = type(views)(*[v.contiguous(memory_format=layout) for v in views])
    loss = model(views)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
step(0)
cpu, wall = [], []
for seed in range(1, steps + 1):
    tic, cpu_tic = time.perf_counter(), time.process_time()
    step(seed)
    wall.append(time.perf_counter() - tic)
    cpu.append(time.process_time() - cpu_tic)
print(json.dumps({"cpu": statistics.median(cpu), "wall": statistics.median(wall)}))
"""


def run(checkout: Path, dim: int, size: int, batch: int, steps: int) -> dict[str, float]:
    """Median CPU and wall seconds per step of ``checkout`` in a fresh process."""
    environment = {**os.environ, "PYTHONPATH": str(checkout / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", CHILD, str(dim), str(size), str(batch), str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the other checkout (its src/ is imported)")
    parser.add_argument("--new", type=Path, default=ROOT.parent, help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process")
    parser.add_argument("--out", type=Path, default=None, help="folder for steps.json and steps.md")
    args = parser.parse_args()
    head = heading("Pretraining step at the demo sizes: two checkouts, interleaved processes")
    print(head)
    samples: dict[tuple[int, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for dim, size, batch in CASES:
            order = (("old", args.old), ("new", args.new))
            for name, checkout in order if round_ % 2 == 0 else order[::-1]:
                samples.setdefault((dim, name), []).append(run(checkout, dim, size, batch, args.steps))
                print(dim, name, samples[(dim, name)][-1], file=sys.stderr, flush=True)
    rows, report = [], []
    for dim, size, batch in CASES:
        old, new = ({k: statistics.median(s[k] for s in samples[(dim, name)]) for k in ("cpu", "wall")}
                    for name in ("old", "new"))  # fmt: skip
        report.append({"case": f"{dim}D {size}^{dim} B={batch}", "old": old, "new": new,
                       "samples": {name: samples[(dim, name)] for name in ("old", "new")}})  # fmt: skip
        rows.append([report[-1]["case"], f"{1e3 * old['cpu']:.0f} / {1e3 * old['wall']:.0f}",
                     f"{1e3 * new['cpu']:.0f} / {1e3 * new['wall']:.0f}",
                     f"{new['cpu'] / old['cpu']:.2f} / {new['wall'] / old['wall']:.2f}"])  # fmt: skip
    table = markdown_table(["case", "old ms: CPU / wall", "new ms: CPU / wall", "new / old: CPU / wall"], rows)
    footer = f"{args.rounds} rounds of {args.steps} steps per checkout. Load average after: {load_average()}"
    print(f"{table}\n\n{footer}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "steps.json").write_text(json.dumps({"old": str(args.old), "rows": report}, indent=1) + "\n")
        (args.out / "steps.md").write_text(f"{head}\n{table}\n\n{footer}\n")


if __name__ == "__main__":
    main()
