"""``cover finetune`` and ``cover evaluate`` on nnU-Net's own network pretrained with ``--backbone nnunet``.

The network is the 2D one nnU-Net's planner chose for the committed tiny plans (see
``tests/_support/nnunet.py``).
"""

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from _support.nnunet import PLANS  # noqa: E402
from cover.downstream.evaluate import evaluate  # noqa: E402
from cover.downstream.finetune import finetune  # noqa: E402
from cover.engine.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from cover.engine.logger import read_log  # noqa: E402
from cover.pretraining.pretrain import pretrain  # noqa: E402


@pytest.fixture(scope="module")
def nnunet_2d_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nnunet2d") / "run"
    pretrain(
        out=str(out), dim=2, size=32, batch_size=2, steps=2, lr=3e-3, warmup_steps=1, eval_pairs=1, seed=3,
        model={"backbone": "nnunet", "head_dim": 4, "window_radius": 1, "backbone_args": {"plans": str(PLANS)}},
    )  # fmt: skip
    return out


def test_fine_tuning_an_nnunet_pretraining_run_learns_and_evaluates(nnunet_2d_run, seg2d, seg_task, tmp_path):
    images, labels = seg2d
    summary = finetune(
        pretrained=str(nnunet_2d_run), images=images, labels=labels, dim=2, size=32, batch_size=8, steps=60,
        lr=3e-3, val_every=30, log_every=1, out=str(tmp_path / "ft"),
    )  # fmt: skip
    tuned = load_checkpoint(summary["last_checkpoint"])
    assert tuned["metadata"]["backbone"] == "nnunet" and tuned["metadata"]["pretrained"].endswith(".pt")
    # The network starts from the pretrained weights (checked on a tensor fine-tuning has changed).
    pretrained = load_checkpoint(list_checkpoints(nnunet_2d_run)[-1])["model"]
    key = "backbone.encoder.stages.0.0.convs.0.conv.weight"
    assert tuned["model"][key].shape == pretrained[key].shape and not torch.equal(tuned["model"][key], pretrained[key])
    loss = np.asarray(read_log(tmp_path / "ft" / "log.csv")["loss"], dtype=float)
    assert len(loss) == 60 and loss[-10:].mean() < 0.6 * loss[:5].mean(), loss
    test_images, test_labels = seg_task(tmp_path / "test", dim=2, n=6, side=32, seed=99)
    result = evaluate(summary["checkpoint"], test_images, test_labels, out=tmp_path / "eval")
    assert result["num_cases"] == 6 and result["mean_dice"] >= 0.8, result  # measured 0.99
