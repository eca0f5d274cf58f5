import sys

import numpy as np
from PIL import Image

from cover.data.demo import FINETUNE_SLAB, TEST_SLAB, TISSUE_NAMES, write_demo_task
from cover.downstream.cases import find_cases


def test_demo_task_files(tmp_path):
    paths = write_demo_task(tmp_path, size=64)
    train, _ = find_cases("seg", paths["images"], paths["labels"])
    test, _ = find_cases("seg", paths["test_images"], paths["test_labels"])
    assert len(train) == FINETUNE_SLAB[1] - FINETUNE_SLAB[0] == 8 and len(test) == 10
    train_z = {int(c.name[-3:]) for c in train}
    test_z = {int(c.name[-3:]) for c in test}
    assert min(test_z) - max(train_z) >= 10 and test_z == set(range(*TEST_SLAB))
    label = np.asarray(Image.open(train[0].label))
    image = np.asarray(Image.open(train[0].image))
    assert label.shape == image.shape == (64, 64)
    counts = np.bincount(label.ravel(), minlength=len(TISSUE_NAMES))
    assert len(counts) == 4 and (counts > 20).all()  # all four tissue classes present
    assert image[label == 0].mean() < image[label == 3].mean()  # background dark, WM bright on T1


def run_cli(monkeypatch, capsys, *args):
    from cover import cli

    monkeypatch.setattr(sys, "argv", ["cover", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as error:
        code = error.code
    return code, capsys.readouterr()


def test_cli_finetune_evaluate_predict(seg_task, tmp_path, monkeypatch, capsys):
    images, labels = seg_task(tmp_path / "data", dim=2, n=6, side=32, seed=4)
    out = str(tmp_path / "run")
    common = ["--images", images, "--labels", labels, "--dim", "2", "--size", "32", "--batch-size", "2"]
    code, _ = run_cli(
        monkeypatch, capsys, "finetune", *common, "--steps", "2", "--channels", "8,16,32,16,8", "--out", out,
        "--num-labeled", "3", "--seed", "1", "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    code, captured = run_cli(monkeypatch, capsys, "finetune", *common, "--steps", "2", "--out", out)
    assert code == 2 and captured.err.startswith("error: out:") and "Traceback" not in captured.err
    code, captured = run_cli(
        monkeypatch, capsys, "evaluate", out + "/best.pt", "--images", images, "--labels", labels,
        "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 0 and "mean Dice" in captured.out
    code, captured = run_cli(monkeypatch, capsys, "predict", out, "--images", images, "--out", str(tmp_path / "pred"))
    assert code == 0 and len(list((tmp_path / "pred").glob("*.npy"))) == 6
    code, captured = run_cli(monkeypatch, capsys, "finetune", "--task", "cls", "--out", str(tmp_path / "x"))
    assert code == 2 and captured.err.strip() == (
        "error: task: the built-in demo is a segmentation task; give --images/--labels or --datalist"
    )
