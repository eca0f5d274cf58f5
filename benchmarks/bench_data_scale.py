"""Start-up time and peak memory of ``cover pretrain`` as the data set grows (issue 25, data that scale).

A synthetic archive is made from the MNI152 template (:func:`cover.data.demo.load_mni`) with cheap
perturbations (slice, flips, shift, intensity offset): 2D files are 512x512 uncompressed PNGs of axial
slices, 3D files 256x256x160 int16 NIfTI volumes (the template padded and cropped). Scale ``k``
holds ``k x --base-2d`` PNGs and ``k x --base-3d`` volumes (hard links into one master folder).

For every scale, part (2D: ``--dim 2`` on the PNGs; 3D: ``--dim 3`` on the volumes), cache state
(cold: an empty cache folder; warm: the one the cold run filled) and process count (1, or 2 through
``--devices 2`` = torchrun with gloo on CPU), one ``cover --verbose pretrain --steps 1`` run reports

* ``ready_s``: seconds from start to the data cache line (data decoded/indexed, dataset built),
* ``first_step_s``: seconds from start to the end of the first training step (the checkpoint saved
  right after it),
* ``cpu_s``: CPU seconds of the run's process tree up to the first step (less sensitive to a shared
  machine's load than wall time),
* ``wall_s``: seconds until the first step's checkpoint is seen in the log; the run is then stopped
  (its held-out evaluation and figures are not part of start-up),
* ``peak_rss_mb``: the largest peak resident memory (``VmHWM``) of the run's process tree (launcher,
  torchrun, ranks, decoders), sampled every 0.5 s up to the first step.

Scales run interleaved (1x, 4x, 16x, then warm 1x, 4x, 16x) so that load on a shared machine hits all alike.
``--race N`` then runs ``cover pretrain --devices 2 --num-workers 2 --steps 2`` N times to the end,
each on a fresh cold cache (both ranks and their loader workers decode the same images into it at
once), and counts the runs that exit 0 with their ``summary.json`` written.
Results go to ``benchmarks/results/data-scale/`` (JSON + Markdown). Generated data goes under
``--root`` (outside the repository); ``--clean`` deletes it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import command_line, load_average, machine, markdown_table

OUT = Path(__file__).resolve().parent / "results" / "data-scale"
SHAPE_3D = (256, 256, 160)


def _perturb(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Flips, a shift and an intensity offset: a cheap, different image from the same template."""
    for axis in range(image.ndim):
        if rng.random() < 0.5:
            image = np.flip(image, axis)
    image = np.roll(image, tuple(int(s) for s in rng.integers(-12, 13, image.ndim)), tuple(range(image.ndim)))
    return image + image.dtype.type(rng.integers(0, 20))


def _fit(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or zero-pad ``volume`` to ``shape``."""
    out = np.zeros(shape, np.float32)
    src, dst = [], []
    for n, m in zip(volume.shape, shape, strict=True):
        a, b = max(0, (n - m) // 2), max(0, (m - n) // 2)
        size = min(n, m)
        src.append(slice(a, a + size))
        dst.append(slice(b, b + size))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def generate(master: Path, n2d: int, n3d: int) -> None:
    """Write the master archive (files already there are kept)."""
    import nibabel as nib
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from cover.data.demo import load_mni

    template = load_mni("t1")
    (master / "2d").mkdir(parents=True, exist_ok=True)
    (master / "3d").mkdir(parents=True, exist_ok=True)
    axial = torch.from_numpy(np.ascontiguousarray(np.moveaxis(template[:, :, 40:150], 2, 0)))[:, None]
    planes = F.interpolate(axial, size=(512, 512), mode="bilinear", align_corners=False)[:, 0].numpy()
    planes = (np.clip(planes, 0, 1) * 230).astype(np.uint8)
    for k in range(n2d):
        path = master / "2d" / f"img{k:05d}.png"
        if not path.exists():  # uncompressed: writing 16,000 files must stay cheap
            image = _perturb(np.random.default_rng(k), planes[k % len(planes)])
            Image.fromarray(np.ascontiguousarray(image)).save(path, compress_level=0)
    padded = (_fit(template, SHAPE_3D) * 1000).astype(np.int16)
    for k in range(n3d):
        path = master / "3d" / f"vol{k:04d}.nii"
        if not path.exists():
            volume = _perturb(np.random.default_rng(100_000 + k), padded)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))


def link_scale(master: Path, folder: Path, n2d: int, n3d: int) -> None:
    """``folder/{2d,3d}`` holding hard links to the first ``n2d`` / ``n3d`` master files."""
    for part, count in (("2d", n2d), ("3d", n3d)):
        (folder / part).mkdir(parents=True, exist_ok=True)
        for source in sorted((master / part).iterdir())[:count]:
            target = folder / part / source.name
            if not target.exists():
                os.link(source, target)


def run_pretrain(
    data: Path, dim: int, cache: Path, processes: int, out: Path, *, steps: int = 1, extra: tuple[str, ...] = ()
) -> dict:
    """One ``cover --verbose pretrain`` run: times and peak resident memory (stopped after step 1 if ``steps`` is 1)."""
    size = "64" if dim == 2 else "32"
    command = [sys.executable, "-m", "cover", "--verbose", "pretrain", "--data", str(data), "--dim", str(dim)]
    command += ["--size", size, "--batch-size", "2", "--steps", str(steps), "--device", "cpu", "--intensity", "minmax"]
    command += ["--cache-dir", str(cache), "--out", str(out), "--overwrite", *extra]
    command += ["--devices", "2"] if processes > 1 else []
    log = out.with_suffix(".log")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    peak, cpu = 0, 0.0
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while proc.poll() is None:
            tree = _tree(proc.pid)
            hwm, seconds = _tree_usage(tree)
            peak, cpu = max(peak, hwm), max(cpu, seconds)
            if steps == 1 and "checkpoint saved" in log.read_text():  # step 1 done: evaluation is not start-up
                for pid in reversed(tree):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
    wall = time.perf_counter() - start
    text = log.read_text()
    return {
        "rc": 0 if steps == 1 and "checkpoint saved" in text else proc.returncode,
        "wall_s": round(wall, 2),
        "ready_s": _seconds(text, r"data cache: "),
        "first_step_s": _seconds(text, r"checkpoint saved"),  # saved right after step 1
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "cache_line": next((line.split("] ", 1)[-1] for line in text.splitlines() if "data cache:" in line), None),
        "tail": text.strip().splitlines()[-1][-300:] if text.strip() else "",
    }


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (torchrun starts its ranks in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def _tree_usage(pids: list[int]) -> tuple[int, float]:
    """Largest peak resident set (``VmHWM``, KiB) of ``pids``, and their CPU seconds (with reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    peak, cpu = 0, 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
            status = Path(f"/proc/{pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, IndexError, AttributeError, ValueError):
            continue
    return peak, cpu


def _seconds(text: str, pattern: str) -> float | None:
    """Seconds since start of the first ``--verbose`` line matching ``pattern``."""
    for line in text.splitlines():
        match = re.match(r"\[\s*([\d.]+)s ", line)
        if match and re.search(pattern, line):
            return float(match.group(1))
    return None


def measure(root: Path, scales: list[int], parts: list[str], procs: list[int], base: dict[str, int]) -> list[dict]:
    """Every (scale, part, processes) cold then warm, the scales interleaved within each configuration."""
    rows = []
    for part in parts:
        dim = 2 if part == "2d" else 3
        for processes in procs:
            for state in ("cold", "warm"):
                for scale in scales:
                    data = root / f"x{scale}" / part
                    cache = root / "cache" / f"x{scale}-{part}-p{processes}"
                    if state == "cold" and cache.exists():
                        shutil.rmtree(cache)
                    out = root / "runs" / f"x{scale}-{part}-p{processes}-{state}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    row = {"scale": scale, "part": part, "files": base[part] * scale, "processes": processes}
                    row |= {"cache": state, **run_pretrain(data, dim, cache, processes, out), "load": load_average()}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            for scale in scales:  # the next configuration starts cold; keep the disk free
                shutil.rmtree(root / "cache" / f"x{scale}-{part}-p{processes}", ignore_errors=True)
    return rows


def race(root: Path, data: Path, runs: int) -> list[dict]:
    """``runs`` two-process ``cover pretrain`` runs to the end, each on a fresh cold shared cache."""
    results = []
    for k in range(runs):
        cache = root / "cache" / f"race{k}"
        shutil.rmtree(cache, ignore_errors=True)
        out = root / "runs" / f"race{k}"
        out.parent.mkdir(parents=True, exist_ok=True)
        row = run_pretrain(data, 2, cache, 2, out, steps=2, extra=("--num-workers", "2"))
        files = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
        ok = row["rc"] == 0 and (out / "summary.json").is_file()
        results.append({"run": k, "ok": ok, "rc": row["rc"], "seconds": row["wall_s"], "tail": row["tail"]})
        results[-1] |= {"files": sum(1 for _ in data.iterdir()), "cache_files": len(files)}
        results[-1] |= {"tmp_left": sum(name.endswith(".tmp") for name in files), "load": load_average()}
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    return results


def growth(rows: list[dict]) -> list[list[str]]:
    """Largest / smallest scale of first-step time, CPU time and peak memory per configuration."""
    table = []
    keys = sorted({(r["part"], r["processes"], r["cache"]) for r in rows})
    for part, processes, state in keys:
        same = sorted(
            (r for r in rows if (r["part"], r["processes"], r["cache"]) == (part, processes, state)),
            key=lambda r: r["scale"],
        )
        low, high = same[0], same[-1]
        if low is high:
            continue
        ratios = [_ratio(low, high, key) for key in ("first_step_s", "cpu_s", "peak_rss_mb")]
        name = f"{part} {processes} proc {state}, {low['scale']}x -> {high['scale']}x"
        table.append([name, *ratios])
    return table


def _ratio(low: dict, high: dict, key: str) -> str:
    return f"{high[key] / low[key]:.2f}" if low.get(key) and high.get(key) else "-"


def report(rows: list[dict], races: list[dict], args: argparse.Namespace) -> None:
    """JSON and Markdown under ``benchmarks/results/data-scale/``."""
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command_line(),
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (OUT / "results.json").write_text(json.dumps({**meta, "rows": rows, "race": races}, indent=1))
    header = [
        "scale",
        "part",
        "files",
        "proc",
        "cache",
        "rc",
        "ready s",
        "first step s",
        "wall s",
        "CPU s",
        "peak RSS MB",
    ]
    body = [
        [
            f"{r['scale']}x",
            r["part"],
            str(r["files"]),
            str(r["processes"]),
            r["cache"],
            str(r["rc"]),
            str(r["ready_s"]),
            str(r["first_step_s"]),
            str(r["wall_s"]),
            str(r["cpu_s"]),
            str(r["peak_rss_mb"]),
        ]
        for r in rows
    ]
    text = [f"# Data that scale ({meta['finished']})", "", f"`{meta['command']}`", "", meta["machine"], ""]
    text += [markdown_table(header, body), "", "Growth from the smallest to the largest scale (ratio):", ""]
    text += [markdown_table(["configuration", "first step", "CPU", "peak RSS"], growth(rows)), ""]
    if races:
        ok = sum(r["ok"] for r in races)
        text += [
            f"`cover pretrain --devices 2 --num-workers 2 --steps 2` on a fresh cold shared cache "
            f"({races[0]['files']} PNGs): {ok} of {len(races)} runs succeeded (exit 0, summary written; "
            f"temporary files left: {sum(r['tmp_left'] for r in races)})."
        ]
    (OUT / "results.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def _rows_from_logs(logs: list[Path]) -> tuple[list[dict], list[dict]]:
    """The measurement rows and race results printed (one JSON object a line) by earlier runs."""
    rows, races = [], []
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                (rows if "scale" in item else races).append(item)
    return rows, races


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/data_scale"))
    parser.add_argument("--scales", default="1,4,16", help="comma-separated multiples of the base counts")
    parser.add_argument("--parts", default="2d,3d")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--base-2d", type=int, default=1000)
    parser.add_argument("--base-3d", type=int, default=25)
    parser.add_argument("--race", type=int, default=10, help="two-process cold-cache runs to count")
    parser.add_argument("--race-files", type=int, default=1000, help="2D files of the race data set")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--skip-measure", action="store_true", help="only the --race runs")
    parser.add_argument("--report-from", type=Path, nargs="*", help="write the report from these logs' JSON rows")
    parser.add_argument("--clean", action="store_true", help="delete --root at the end")
    args = parser.parse_args()
    if args.report_from:
        rows, races = _rows_from_logs(args.report_from)
        report(rows, races, args)
        return
    scales = [int(s) for s in args.scales.split(",")]
    parts = args.parts.split(",")
    base = {"2d": args.base_2d, "3d": args.base_3d}
    top = max(scales)
    generate(
        args.root / "master",
        base["2d"] * top if "2d" in parts or args.race else 0,
        base["3d"] * top if "3d" in parts else 0,
    )
    for scale in scales:
        link_scale(args.root / "master", args.root / f"x{scale}", base["2d"] * scale, base["3d"] * scale)
    link_scale(args.root / "master", args.root / "race", args.race_files, 0)
    if args.generate_only:
        return
    rows = (
        []
        if args.skip_measure
        else measure(args.root, scales, parts, [int(p) for p in args.processes.split(",")], base)
    )
    races = race(args.root, args.root / "race" / "2d", args.race)
    report(rows, races, args)
    if args.clean:
        shutil.rmtree(args.root)


if __name__ == "__main__":
    main()
