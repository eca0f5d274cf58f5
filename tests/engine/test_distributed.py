"""DDP on CPU: two gloo processes launched by torchrun, then a resume with one process."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from cover.engine.checkpoint import list_checkpoints, load_checkpoint
from cover.engine.distributed import DistributedContext, gather_digests, mean_over_ranks, state_digest
from cover.engine.launch import strip_devices, torchrun_args
from cover.engine.logger import read_log
from cover.engine.sampler import StepBatchSampler, step_batch
from cover.pretraining.pretrain import pretrain

TINY = {
    "model": {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4},
    "lr": 3e-3,
    "warmup_steps": 1,
    "log_every": 1,
    "eval_pairs": 2,
}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """``torchrun --nproc_per_node=2 -m cover pretrain`` with gloo on CPU, 4 steps."""
    root = tmp_path_factory.mktemp("ddp")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "cover", "pretrain", "--config", str(config), "--size", "32", "--batch-size", "4",
        "--steps", "4", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result.stderr


def test_two_gloo_processes_train_identical_replicas(ddp_run):
    out, stderr = ddp_run
    assert "processes=2" in stderr
    assert [p.name for p in list_checkpoints(out)] == ["step_00000004.pt"]  # rank 0 only, once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    digests = summary["parameter_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], digests
    state = load_checkpoint(list_checkpoints(out)[-1])
    assert state_digest(state["model"]) == digests[0]
    # The replicas did train: the weights left their seeded initialisation.
    from cover.config import load_yaml, resolve_pretrain_config
    from cover.pretraining.pretrain import build_model

    torch.manual_seed(0)
    initial = build_model(resolve_pretrain_config(load_yaml(out / "config.yaml")))
    assert state_digest(initial) != digests[0]
    log = read_log(out / "log.csv")
    assert log["step"] == [1, 2, 3, 4] and all(v > 0 for v in log["loss"])


def test_resume_with_one_process(ddp_run, tmp_path):
    out, _ = ddp_run
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    summary = pretrain(out=str(resumed), resume="auto", steps=6, device="cpu")
    assert summary["start_step"] == 4 and summary["processes"] == 1
    log = read_log(resumed / "log.csv")
    assert log["step"] == [1, 2, 3, 4, 5, 6]
    assert log["loss"][:4] == read_log(out / "log.csv")["loss"]  # the 2-process rows are kept
    state = load_checkpoint(list_checkpoints(resumed)[-1])
    assert state["step"] == 6 and state["config"]["batch_size"] == 4
    assert state_digest(state["model"]) == summary["parameter_digests"][0]


def test_global_batch_is_split_across_ranks():
    whole = list(StepBatchSampler(7, 8, 100, 3, 6))
    halves = [list(StepBatchSampler(7, 8, 100, 3, 6, rank=r, world_size=2)) for r in range(2)]
    for step, batch in enumerate(whole):
        assert batch == step_batch(7, step + 3, 8, 100)
        assert halves[0][step] + halves[1][step] == batch and len(halves[0][step]) == 4
    with pytest.raises(ValueError, match="not divisible"):
        StepBatchSampler(7, 6, 100, 0, 1, rank=0, world_size=4)


def test_single_process_helpers_and_launch_arguments():
    context = DistributedContext(0, 1, 0, torch.device("cpu"))
    assert mean_over_ranks({"loss": 2.5}, context) == {"loss": 2.5}
    model = torch.nn.Linear(3, 2)
    assert gather_digests(model, context) == [state_digest(model.state_dict())]
    argv = ["pretrain", "--devices", "2", "--steps", "5", "--devices=3", "--out", "x"]
    assert strip_devices(argv) == ["pretrain", "--steps", "5", "--out", "x"]
    assert torchrun_args(2, argv) == [
        "--standalone", "--nproc_per_node=2", "-m", "cover", "pretrain", "--steps", "5", "--out", "x",
    ]  # fmt: skip
