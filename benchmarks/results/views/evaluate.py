"""Endpoint error of demo pretraining runs on the same held-out view pairs, drawn by both view styles.

Each run's own summary EPE uses 8 pairs of its own style and seed, so a run with the authors'
views and one with cover's are scored on different pairs. Here every run is scored on the
same pairs: ``--pairs`` held-out pairs of the demo's held-out slab, evaluation seed 0 for all
runs, drawn once with ``style: cover`` and once with ``style: authors`` (the run's own
ranges, which are the demo's for every run here).

Usage: python benchmarks/results/views/evaluate.py RUN_DIR [RUN_DIR ...] [--pairs 64] > results.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
import yaml

from cover.config import resolve_pretrain_config
from cover.models.loading import load_vector_model
from cover.pretraining.pretrain import build_datasets, evaluate_fields
from cover.views import ViewGenerator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--pairs", type=int, default=64)
    args = parser.parse_args()
    print("run,style,seed,own_epe,own_epe_zero,eval_style,epe,epe_zero,ratio")
    for run in args.runs:
        model, _, _ = load_vector_model(run)
        config = resolve_pretrain_config(yaml.safe_load((Path(run) / "config.yaml").read_text()))
        _, heldout, _ = build_datasets(config)
        summary = json.loads((Path(run) / "summary.json").read_text())
        for style in ("cover", "authors"):
            views = dataclasses.replace(config.views, style=style)
            generator = ViewGenerator(views, config.size)
            result = evaluate_fields(model, heldout, generator, args.pairs, 0, torch.device("cpu"))
            print(
                f"{Path(run).name},{config.views.style},{config.seed},{summary['epe']:.4f},{summary['epe_zero']:.4f},"
                f"{style},{result['epe']:.4f},{result['epe_zero']:.4f},{result['epe'] / result['epe_zero']:.4f}"
            )


if __name__ == "__main__":
    main()
