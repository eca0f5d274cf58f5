"""The benchmark runner on a micro config, its presets and config checks, and its report."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from _support.tasks import write_task
from cover.benchmarking.config import PRESETS, resolve_benchmark_config
from cover.benchmarking.report import aggregate, dice_table
from cover.benchmarking.runner import benchmark
from cover.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "benchmark"


def micro(tmp_path):
    task = {**write_task(tmp_path / "blobs"), "intensity": "minmax"}
    del task["class_names"]
    return {
        "out": str(tmp_path / "bench"),
        "methods": ["scratch", "cover"],
        "seeds": [0],
        "model": {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4},
        "pretrain": {"steps": 2, "batch_size": 2, "size": 32, "warmup_steps": 1, "eval_pairs": 2},
        "finetune": {"steps": 2, "batch_size": 2, "size": 32},
        "tasks": [task],
        "analyze": {"samples_per_class": 20, "max_distance": 2},
        "device": "cpu",
    }


def test_micro_benchmark_writes_results_and_skips_finished_cells(tmp_path):
    config = micro(tmp_path)
    first = benchmark(config)
    out = Path(config["out"])
    for name in ("results.md", "results.csv", "label_efficiency.png", "neighbour_similarity.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert first["cells"] == first["expected_cells"] == 4
    assert first["ran"] == 1 + 2 + 4 and first["skipped"] == 0  # pretraining, 2 analyses, 4 cells
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["method"], r["budget"]) for r in rows) == [("cover", "1"), ("cover", "2")] + [
        ("scratch", "1"),
        ("scratch", "2"),
    ]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    cell = json.loads((out / "cells" / "blobs__cover__n2__seed0.json").read_text())
    assert cell["status"] == "done" and cell["num_train"] == 2 and cell["num_test"] == 2
    table = (out / "results.md").read_text()
    assert "| scratch |" in table and "| cover |" in table and "blobs n=1" in table and "**" in table
    assert "intra / inter" in table

    second = benchmark(config)
    assert second["ran"] == 0 and second["skipped"] == 7
    assert second["results"] == first["results"]

    more_steps = {**config, "finetune": {"steps": 3, "batch_size": 2, "size": 32}}
    with pytest.raises(ConfigError, match="other settings"):
        benchmark(more_steps)


def test_benchmark_refuses_a_foreign_output_folder(tmp_path):
    config = micro(tmp_path)
    Path(config["out"]).mkdir()
    (Path(config["out"]) / "thesis.tex").write_text("keep")
    with pytest.raises(ConfigError, match="not a cover benchmark"):
        benchmark(config)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_files_match_the_presets_and_resolve(name):
    """A consistency check, not a correctness test: the shipped YAML says what the code's preset
    says, and both resolve to the same configuration."""
    values = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert values == {"preset": name, **PRESETS[name]}
    config = resolve_benchmark_config(preset=name)
    assert config.preset == name and {"mni-tissue-2d", "mni-regions-2d"} & {t.name for t in config.task_configs()}
    assert resolve_benchmark_config(CONFIGS / f"{name}.yaml") == config


def test_default_preset_is_mni_regions_2d_with_validation_three_seeds_and_every_method():
    config = resolve_benchmark_config(preset="default")
    assert list(config.seeds) == [0, 1, 2] and [t.name for t in config.task_configs()] == ["mni-regions-2d"]
    assert config.val_fraction > 0 and config.steps_per_case > 0
    assert set(config.methods) == {"scratch", "dense-infonce", "simclr", "cover"}


def test_default_preset_pretrains_with_the_task_like_views():
    """The default preset's 2D pretraining (as the runner merges it) resolves to views with the task's
    kind of variation: elastic field, gamma change and bias field on, wider ranges than the demo's."""
    from cover.config import deep_merge, resolve_pretrain_config

    config = resolve_benchmark_config(preset="default")
    values = deep_merge(config.pretrain, config.pretrain_2d)
    views = resolve_pretrain_config({**values, "method": "cover", "dim": 2}).views
    assert views.elastic and views.gamma_range == (0.6, 1.6) and views.bias_std == 0.3
    assert views.rotation_deg == 15.0 and views.scale_range == (0.8, 1.2) and views.blur_sigma_max == 1.0


def test_custom_task_example_resolves():
    config = resolve_benchmark_config(CONFIGS / "custom_task.yaml")
    (task,) = config.task_configs()
    assert task.name == "liver-ct" and task.dim == 3 and task.intensity == "ct:-175,250"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"methods": ["scratch", "moco"]}, "methods"),
        ({"pretrain": {"method": "cover"}}, "set by the benchmark"),
        ({"finetune": {"num_labeled": 3}}, "set by the benchmark"),
        ({"tasks": [{"name": "mine"}]}, "not a built-in task"),
        ({"tasks": [{"name": "mni-tissue-2d", "budgets": [1, 16]}]}, "8 labeled slices"),
        ({"tasks": [{"name": "mni-regions-2d", "budgets": [1, 22]}], "val_fraction": 0.2}, "regions-2d'.budgets"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"finetune": {"select": "last"}}, "set by the benchmark"),
        (
            {"tasks": [{"name": "mni-tissue-2d", "bugdets": [1]}]},
            "tasks\\[0\\].bugdets: unknown key, did you mean tasks\\[0\\].budgets\\?",
        ),
        ({"analyze": {"samples": 3}}, "analyze: unknown keys"),
        ({"preset": "huge"}, "preset"),
    ],
)
def test_config_mistakes_are_one_line_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        resolve_benchmark_config({"preset": "quick", **change})


def test_table_bolds_the_best_mean_per_column():
    cells = [
        {"task": "t", "budget": 1, "method": m, "seed": s, "dice": d}
        for m, values in (("a", (0.5, 0.7)), ("b", (0.8, 0.8)))
        for s, d in enumerate(values)
    ]
    stats = aggregate(cells)
    assert stats[("t", 1, "a")]["mean"] == pytest.approx(0.6)
    assert stats[("t", 1, "a")]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    lines = dice_table(stats, ["a", "b"], [("t", 1)])
    assert lines[2].startswith("| a | 60.0 ± 14.1 |")
    assert lines[3] == "| b | **80.0 ± 0.0** | **80.0** |"  # two seeds that agree


def test_table_shows_no_spread_for_a_single_seed():
    cells = [{"task": "t", "budget": 1, "method": "a", "seed": 0, "dice": 0.5}]
    cells += [{"task": "t", "budget": 1, "method": "b", "seed": s, "dice": d} for s, d in enumerate((0.2, 0.4))]
    lines = dice_table(aggregate(cells), ["a", "b"], [("t", 1)])
    assert lines[2] == "| a | **50.0 (1 seed)** | **50.0** |"
    lines = dice_table(aggregate(cells[:1]), ["a"], [("t", 1)])
    assert lines[2] == "| a | **50.0** | **50.0** |"


def _signal_on_call(monkeypatch, target, name: str, call: int) -> None:
    """Send SIGTERM to this process on the ``call``-th call of ``target.name`` (1-based)."""
    import os
    import signal

    original = getattr(target, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)


@pytest.mark.parametrize(
    "where",
    [
        "finetune-step",  # inside a fine-tuning: it checkpoints, the re-run resumes it
        "evaluate",  # between training runs: the benchmark stops after the unit
    ],
)
def test_sigterm_stops_the_benchmark_and_a_rerun_finishes_with_the_same_results(tmp_path, monkeypatch, where):
    import cover.downstream.evaluate as evaluate_module
    from cover.downstream.batches import BatchSampler
    from cover.errors import TrainingInterrupted

    reference = benchmark({**micro(tmp_path / "reference"), "analyze": False})
    config = {**micro(tmp_path / "interrupted"), "analyze": False}
    if where == "finetune-step":
        _signal_on_call(monkeypatch, BatchSampler, "batch", 3)  # the second cell's first step
    else:
        _signal_on_call(monkeypatch, evaluate_module, "evaluate", 2)
    with pytest.raises(TrainingInterrupted, match="benchmark interrupted; .* continue with: "):
        benchmark(config, command="cover benchmark --config micro.yaml")
    monkeypatch.undo()
    records = {p.stem: json.loads(p.read_text())["status"] for p in (Path(config["out"]) / "cells").glob("*.json")}
    # Pretraining and the first cell are done; a signal during an evaluation lets that cell finish too.
    finished = 2 if where == "finetune-step" else 3
    assert list(records.values()).count("done") == finished, records
    again = benchmark(config)
    assert again["cells"] == 4 and again["skipped"] == finished
    assert again["results"] == reference["results"]


def test_protocol_scales_steps_with_the_budget_and_tests_the_best_validated_checkpoint(tmp_path):
    config = {
        **micro(tmp_path),
        "methods": ["scratch"],
        "analyze": False,
        "val_fraction": 0.34,  # 1 of the 3 training cases validates, for both budgets
        "steps_per_case": 2,
        "finetune": {"steps": 3, "batch_size": 2, "size": 32, "val_every": 1, "lr": 0.01},
    }
    benchmark(config)
    out = Path(config["out"])
    validation = []
    for budget, steps in ((1, 3), (2, 4)):  # max(3, 2 x n)
        cell = json.loads((out / "cells" / f"blobs__scratch__n{budget}__seed0.json").read_text())
        run = out / "finetune" / "blobs" / "scratch" / f"n{budget}-seed0"
        split = json.loads((run / "split.json").read_text())
        assert cell["steps"] == steps and cell["num_train"] == budget and cell["num_val"] == 1
        assert len(split["val"]) == 1 and split["val"][0]["name"] not in [c["name"] for c in split["train"]]
        rows = [r for r in csv.DictReader((run / "log.csv").open()) if r["val_dice"]]
        assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
        scores = [float(r["val_dice"]) for r in rows]
        best = int(np.argmax(scores))  # first maximum: later ties do not replace it
        assert cell["tested_step"] == best + 1 and cell["val_dice"] == pytest.approx(scores[best])
        assert json.loads((run / "test" / "metrics.json").read_text())["checkpoint"].endswith("best.pt")
        validation.append(split["val"])
    assert validation[0] == validation[1]  # the same held-out case for both budgets of a seed
    assert "best-validated checkpoint tested" in (out / "results.md").read_text()
    assert "blobs` (your task, 2D)" in (out / "results.md").read_text()


def test_a_failed_cell_is_recorded_and_a_corrected_rerun_redoes_it(tmp_path, monkeypatch):
    import cover.downstream.evaluate as evaluate_module

    config = {**micro(tmp_path), "methods": ["scratch"], "analyze": False}
    config["tasks"][0]["budgets"] = [1]
    original = evaluate_module.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("test disk full")

    monkeypatch.setattr(evaluate_module, "evaluate", broken)
    with pytest.raises(RuntimeError, match="test disk full"):
        benchmark(config)
    out = Path(config["out"])
    record = json.loads((out / "cells" / "blobs__scratch__n1__seed0.json").read_text())
    assert record["status"] == "failed" and record["error"] == "test disk full"
    monkeypatch.setattr(evaluate_module, "evaluate", original)
    corrected = {**config, "finetune": {**config["finetune"], "steps": 3}}
    again = benchmark(corrected)  # other settings: redone from the start, no file to delete by hand
    assert again["cells"] == 1 and again["ran"] == 1 and again["skipped"] == 0
    record = json.loads((out / "cells" / "blobs__scratch__n1__seed0.json").read_text())
    assert record["status"] == "done" and record["steps"] == 3
    run = out / "finetune" / "blobs" / "scratch"
    assert (run / "n1-seed0.superseded").is_dir()  # the failed attempt's run is kept, moved aside
    assert benchmark(corrected)["skipped"] == 1  # finished work with the same settings is reused
    with pytest.raises(ConfigError, match="is finished work made with other settings"):
        benchmark(config)  # finished work is never silently replaced


def test_paper_preset_dry_run_shows_the_paper_recipe_for_every_pretraining(monkeypatch, capsys, tmp_path):
    """``--preset paper --dry-run``: 384 px crops from 576, batch 24, lr 1e-4 * 24 / 256, no warm-up,
    467,200 steps, the authors' views with the release's ranges, recipe paper, the authors' init;
    nothing is written."""
    from _support.cli import run_cli_output

    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli_output(["benchmark", "--preset", "paper", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and not any(tmp_path.iterdir())
    runs = yaml.safe_load(out[out.index("pretraining:") :])["pretraining"]
    assert set(runs) == {f"{m}-{d}d" for m in ("dense-infonce", "simclr", "cover") for d in (2, 3)}
    cover = runs["cover-2d"]
    assert (cover["size"], cover["batch_size"], cover["steps"], cover["warmup_steps"]) == ([384, 384], 24, 467_200, 0)
    assert cover["lr"] == pytest.approx(1e-4 * 24 / 256) and cover["views"]["source_scale"] == 1.5
    assert cover["method_options"] == {"recipe": "paper"} and cover["model"]["backbone_args"] == {"init": "authors"}
    views = cover["views"]
    assert views["style"] == "authors" and views["rotation_deg"] == 30 and views["scale_range"] == [0.25, 1.75]
    assert views["translation"] == 0.3 and views["shear_deg"] == 8.4375
    assert runs["cover-3d"]["views"]["style"] == "authors" and runs["cover-3d"]["lr"] == pytest.approx(1e-4 * 4 / 256)


def test_cells_record_what_stopped_them_and_the_report_warns_about_the_cap(tmp_path, monkeypatch, caplog):
    # Scripted validation scores, in the order the cells validate (n = 1: steps 1-3, n = 2: steps 1-3 of 4):
    # n = 1 improves at every validation and reaches its 3-step cap; n = 2 has two stale validations
    # after step 1 and stops by patience at step 3.
    import logging

    import cover.downstream.finetune_task as task_module

    scores = iter([0.5, 0.6, 0.7, 0.5, 0.4, 0.45])
    monkeypatch.setattr(
        task_module, "validation_score", lambda *a, **k: dict.fromkeys(("score", "val_dice"), next(scores))
    )
    config = {
        **micro(tmp_path),
        "methods": ["scratch"],
        "analyze": False,
        "val_fraction": 0.34,
        "steps_per_case": 2,
        "finetune": {"steps": 3, "batch_size": 2, "size": 32, "val_every": 1, "patience": 2},
    }
    with caplog.at_level(logging.WARNING, logger="cover"):
        benchmark(config)
    out = Path(config["out"])
    rows = {r["budget"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert (rows["1"]["stopped_by"], rows["1"]["best_step"], rows["1"]["steps"]) == ("cap", "3", "3")
    assert (rows["2"]["stopped_by"], rows["2"]["best_step"], rows["2"]["steps"]) == ("patience", "1", "3")
    cell = json.loads((out / "cells" / "blobs__scratch__n2__seed0.json").read_text())
    assert cell["stopped_by"] == "patience" and cell["best_step"] == cell["tested_step"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "cover.benchmarking.runner"]
    assert warnings == ["benchmark: blobs scratch n=1 seed=0 hit the step cap (3 steps, best validation at step 3): "
                        "it may not have converged; raise finetune.steps"]  # fmt: skip
    report = (out / "results.md").read_text()
    assert "| scratch | best 3 · patience 0, cap 1 | best 1 · patience 1, cap 0 |" in report
    assert "**Warning:** blobs scratch n=1 seed=0 hit the step cap" in report


def test_default_preset_fine_tunes_to_convergence_with_the_steps_only_a_cap():
    """Every fine-tuning setting of a default cell but the cap itself is the same whatever the cap
    (warm-up, validation interval, learning rates up to the cap), and early stopping is on."""
    from cover.config import deep_merge
    from cover.downstream.config import resolve_finetune_config, resolve_steps
    from cover.downstream.optim import head_factor

    config = resolve_benchmark_config(preset="default")
    values = {**deep_merge(config.finetune, config.task_configs()[0].finetune), "images": "x", "labels": "y", "dim": 2}
    short, long = (resolve_steps(resolve_finetune_config(values, steps=cap), 1) for cap in (300, 2000))
    assert short.patience and short.val_fraction > 0 and (short.warmup_steps, short.val_every) == (15, 20)
    assert (long.warmup_steps, long.val_every, long.patience) == (short.warmup_steps, short.val_every, short.patience)
    rates = [[head_factor(s, c.steps, c.warmup_steps, c.lr_schedule) for s in range(300)] for c in (short, long)]
    assert rates[0] == rates[1] and rates[0][14:] == [1.0] * 286
