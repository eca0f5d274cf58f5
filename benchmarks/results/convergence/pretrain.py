"""Pretrain the default preset's COVER backbone into /tmp/conv/bench (the benchmark's own record and folder).

usage: python pretrain.py  (stopped with SIGTERM at step 300 in the convergence study, see README.md)

A record of the code it ran with (cover at cf54e04, where the harness was ``cover.benchmark`` and the
runner had ``_model_options``); it does not run on later code. Today the same backbone comes from
``cover benchmark --preset default --methods cover`` (its pretraining cell).
"""

from pathlib import Path

from cover.benchmark.config import resolve_benchmark_config
from cover.benchmark.runner import Records, _model_options, _prepare, _pretrain

config = resolve_benchmark_config(preset="default", out="/tmp/conv/bench", methods=["scratch", "cover"], device="cpu")
out = _prepare(Path(config.out))
model, _ = _model_options(config)
record, reused = _pretrain(config, "cover", 2, out, Records(out / "cells"), model)
print(record["checkpoint"], record["seconds"], reused)
