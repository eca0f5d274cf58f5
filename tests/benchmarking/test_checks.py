"""``cover benchmark`` finds every mistake of a config and its tasks' files before any work starts."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cover.pretraining.pretrain as pretrain_module
from _support.tasks import write_task
from cover.benchmarking.runner import benchmark
from cover.errors import ConfigError, CoverError, DataError


def config_of(tmp_path: Path, task: dict, **change) -> dict:
    return {
        "out": str(tmp_path / "bench"),
        "methods": ["scratch", "cover"],
        "seeds": [0],
        "model": {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4},
        "pretrain": {"steps": 2, "batch_size": 2, "size": 32},
        "finetune": {"steps": 2, "batch_size": 2, "size": 32},
        "tasks": [task],
        "analyze": False,
        "device": "cpu",
        **change,
    }


def _jpeg_label(task: dict) -> None:
    path = Path(task["labels"]) / "c1.png"
    Image.open(path).convert("L").save(path.with_suffix(".jpg"), quality=95)
    path.unlink()


def _test_label_off_grid(task: dict) -> None:
    Image.fromarray(np.zeros((32, 30), np.uint8)).save(Path(task["test_labels"]) / "c1.png")


def _no_test_labels_folder(task: dict) -> None:
    task["test_labels"] = task["test_labels"] + "_missing"


MISTAKES = {
    "JPEG label map": (_jpeg_label, {}, DataError, "c1.jpg: is a JPEG label map; JPEG is lossy"),
    "test label on another grid": (_test_label_off_grid, {}, DataError, "has shape 32x30 but its image is 32x32"),
    "missing test_labels folder": (_no_test_labels_folder, {}, DataError, "labels_missing: no such file or folder"),
    "no test_labels": (lambda t: t.pop("test_labels"), {}, ConfigError, "test_labels: give the test label-map folder"),
    "budget above the cases": (
        lambda t: t.update(budgets=[1, 4]),
        {},
        ConfigError,
        "budgets: [1, 4] asks for more labeled cases than there are",
    ),
    "budget above the cases left by validation": (
        lambda t: t.update(budgets=[3]),
        {"val_fraction": 0.3},
        ConfigError,
        "(3 cases, 1 for validation)",
    ),
    "class_names one short": (
        lambda t: t.update(class_names=["background", "disc"]),
        {},
        ConfigError,
        "class_names: 2 names ['background', 'disc'] but the label maps hold classes 0..2 (3 classes)",
    ),
    "unknown pretrain.intensity value": (
        lambda t: None,
        {"pretrain": {"steps": 2, "intensity": "ctt"}},
        ConfigError,
        "pretrain (cover, 2D): intensity: unknown intensity preset 'ctt'",
    ),
    "typo in pretrain_3d": (
        lambda t: None,
        {"pretrain_3d": {"batchsize": 2}},
        ConfigError,
        "pretrain_3d.batchsize: unknown key, did you mean pretrain_3d.batch_size?",
    ),
    "typo in a task's finetune": (
        lambda t: t.update(finetune={"stepz": 3}),
        {},
        ConfigError,
        "tasks[0].finetune.stepz: unknown key, did you mean tasks[0].finetune.steps?",
    ),
    "size the network cannot take": (
        lambda t: None,
        {"pretrain_2d": {"size": 30}},
        ConfigError,
        "pretrain (cover, 2D): size: [30, 30] must be positive multiples of 4",
    ),
    "missing pretraining data": (
        lambda t: None,
        {"pretrain": {"steps": 2, "data": "/nowhere/scans"}},
        ConfigError,
        "pretrain.data: /nowhere/scans: no such file or folder",
    ),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_mistakes_are_reported_before_any_work(case, tmp_path, monkeypatch):
    change_task, change, kind, words = MISTAKES[case]
    task = write_task(tmp_path / "data")
    change_task(task)

    def no_work(*args, **kwargs):
        raise AssertionError("pretraining started before the mistake was reported")

    monkeypatch.setattr(pretrain_module, "pretrain", no_work)
    with pytest.raises(kind) as error:
        benchmark(config_of(tmp_path, task, **change))
    assert words in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert not (tmp_path / "bench").exists()  # nothing written


def test_dry_run_checks_everything_and_writes_nothing(tmp_path, monkeypatch):
    task = write_task(tmp_path / "data")
    task["preset"] = task.pop("class_names") and "minmax"  # the old spelling still reads
    checked = benchmark(config_of(tmp_path, task, pretrain={"steps": 2, "intensity": "mri"}), dry_run=True)
    assert checked["config"]["tasks"][0]["intensity"] == "minmax" and "preset" not in checked["config"]["tasks"][0]
    assert checked["config"]["pretrain"]["intensity"] == "mri"
    assert checked["plan"] == [
        "pretrain cover (2D)",
        "fine-tune + test blobs (2D, intensity minmax): budgets [1, 2] x methods ['scratch', 'cover'] x seeds [0] "
        "= 4 cells",
    ]
    assert not (tmp_path / "bench").exists()
    _jpeg_label(task)
    with pytest.raises(CoverError, match="is a JPEG label map"):
        benchmark(config_of(tmp_path, task), dry_run=True)


def test_cli_dry_run_prints_the_config_and_plan_and_a_mistake_is_one_line(tmp_path, monkeypatch, capsys):
    import yaml

    from _support.cli import run_cli_output

    task = write_task(tmp_path / "data")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config_of(tmp_path, {**task, "intensity": "minmax"})))
    code, out, lines = run_cli_output(["benchmark", "--config", path, "--dry-run"], monkeypatch, capsys)
    assert code == 0 and lines == [], lines
    shown = yaml.safe_load(out)
    assert shown["tasks"][0]["intensity"] == "minmax" and shown["tasks"][0]["class_names"][2] == "core"
    assert out.rstrip().endswith("x seeds [0] = 4 cells") and "# plan (config and data checked" in out
    _test_label_off_grid(task)
    code, out, lines = run_cli_output(["benchmark", "--config", path, "--dry-run"], monkeypatch, capsys)
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("error: tasks[0] 'blobs': ") and "c1.png: has shape 32x30" in lines[0]
    assert not (tmp_path / "bench").exists()
