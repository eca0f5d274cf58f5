"""The baselines train through ``cover pretrain`` (same loop, same views) and learn."""

import json

import numpy as np
import pytest

from cover.engine.checkpoint import list_checkpoints, load_checkpoint
from cover.engine.logger import read_log
from cover.errors import ConfigError
from cover.pretraining.pretrain import pretrain

TINY_MODEL = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}


def tiny(out, method, steps, **options):
    return {
        "out": str(out),
        "method": method,
        "method_options": options,
        "size": 32,
        "batch_size": 4,
        "steps": steps,
        "lr": 3e-3,
        "warmup_steps": 3,
        "log_every": 1,
        "checkpoint_every": steps,
        "model": TINY_MODEL,
    }


@pytest.mark.parametrize(
    "method,options",
    [("dense-infonce", {"num_pixels": 64, "hidden_dim": 32, "proj_dim": 16}), ("simclr", {"hidden_dim": 32})],
)
def test_baseline_pretraining_learns(tmp_path, method, options):
    summary = pretrain(**tiny(tmp_path / "run", method, 40, **options))
    log = read_log(tmp_path / "run" / "log.csv")
    first, last = np.mean(log["loss"][:5]), np.mean(log["loss"][-5:])
    assert last < 0.85 * first, (first, last)
    assert "epe" not in summary and summary["final_acc_pos"] > 0
    # The method's own quantities are logged (not COVER's columns).
    assert set(log) == {"step", "loss", "loss_nce", "acc_pos", "lr", "seconds", "feat_pair_cos", "feat_eff_rank"}
    assert np.mean(log["acc_pos"][-5:]) > np.mean(log["acc_pos"][:5])
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert state["metadata"]["method"] == method
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["method"] == method


def test_scratch_pretraining_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no pretraining"):
        pretrain(**tiny(tmp_path / "run", "scratch", 2))
