"""One name per option: ``--checkpoint`` everywhere (old forms kept as aliases), ``--intensity``
for the intensity preset (``--preset`` a deprecated alias outside ``cover benchmark``), network
and loss flags on ``cover pretrain``, and ``--dry-run`` printing the resolved configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from _support.cli import run_cli_output as run


def _without(args: list, flag: str) -> list:
    return [a for a in args if a != flag]


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--checkpoint", "{ckpt}", "--out", "{out}"],
        ["predict", "--checkpoint", "{ckpt}", "--images", "{out}", "--out", "{out}"],
        ["export", "--checkpoint", "{ckpt}", "--out", "{out}"],
        ["analyze", "--checkpoint", "{ckpt}", "--out", "{out}"],
        ["register", "--checkpoint", "{ckpt}", "--fixed", "f.png", "--moving", "m.png", "--out", "{out}"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_names_its_checkpoint_with_the_option_and_old_forms_still_work(
    command, tmp_path, monkeypatch, capsys
):
    ckpt, out = tmp_path / "no_such_run", tmp_path / "out"
    args = [str(a).format(ckpt=ckpt, out=out) for a in command]
    expected = [f"error: {ckpt}: checkpoint not found"]
    code, _, lines = run(args, monkeypatch, capsys)
    assert code == 2 and lines == expected
    if command[0] in ("evaluate", "predict", "export"):  # the positional argument, as before
        code, _, lines = run([args[0], str(ckpt), *args[3:]], monkeypatch, capsys)
        assert code == 2 and lines == expected
        code, _, lines = run([args[0], str(out), *args[1:]], monkeypatch, capsys)
        assert code == 2 and lines == [
            f"error: checkpoint: given twice ({out} and --checkpoint {ckpt}); give --checkpoint only"
        ]
        code, _, lines = run([args[0], *args[3:]], monkeypatch, capsys)
        assert code == 2 and lines == ["error: checkpoint: required (--checkpoint PATH)"]
    assert not out.exists()


def test_finetune_takes_checkpoint_and_the_old_pretrained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shown = []
    for flag in ("--checkpoint", "--pretrained"):
        code, out, lines = run(["finetune", flag, "runs/ct", "--task", "seg", "--dry-run"], monkeypatch, capsys)
        assert code == 0 and lines == []
        shown.append(yaml.safe_load(out))
    assert shown[0] == shown[1] and shown[0]["pretrained"] == "runs/ct"
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_intensity_with_preset_as_a_deprecated_alias(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, lines = run([command, "--intensity", "ct:-175,250", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and lines == []
    given = yaml.safe_load(out)
    assert given["intensity"] == "ct:-175,250" and "preset" not in given
    code, out, lines = run([command, "--preset", "ct:-175,250", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and lines == ["warning: --preset is deprecated for the intensity preset; use --intensity"]
    assert yaml.safe_load(out) == given
    code, out, lines = run([command, "--preset", "mri", "--intensity", "ct", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: intensity: --intensity ct and --preset mri disagree; give --intensity only"]
    assert list(tmp_path.iterdir()) == []


def test_benchmark_preset_keeps_its_configuration_meaning():
    import typer.main

    from cover.cli.console import app

    benchmark = next(c for c in typer.main.get_command(app).commands.values() if c.name == "benchmark")
    preset = next(p for p in benchmark.params if p.name == "preset")
    assert "--preset" in preset.opts and "intensity" not in (preset.help or "").lower()


def test_pretrain_network_and_loss_flags_reach_the_resolved_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--channels", "8,16,32,16,8", "--heads", "3,2,1", "--head-dim", "5", "--window-radius", "3"]
    flags += ["--vec-weight", "0.25", "--con-weight", "2.5", "--dim", "3", "--size", "32", "--mov-schedule", "fused"]
    code, out, lines = run(["pretrain", *flags, "--dry-run"], monkeypatch, capsys)
    assert code == 0 and lines == []
    shown = yaml.safe_load(out)
    assert shown["model"]["channels"] == [8, 16, 32, 16, 8] and shown["model"]["heads"] == [3, 2, 1]
    assert shown["model"]["head_dim"] == 5 and shown["model"]["window_radius"] == 3
    assert shown["model"]["mov_schedule"] == "fused"
    assert shown["vec_weight"] == 0.25 and shown["con_weight"] == 2.5
    assert shown["dim"] == 3 and shown["size"] == [32, 32, 32] and shown["out"] == "cover_runs/pretrain-3d"
    code, out, lines = run(
        ["pretrain", "--heads", "1,1", "--channels", "8,16,32,16,8", "--dry-run"], monkeypatch, capsys
    )
    assert code == 2 and lines == ["error: model.heads: needs one entry per pyramid level (3)"]
    code, out, lines = run(["pretrain", "--mov-schedule", "tiled", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and lines == ["error: model.mov_schedule: 'tiled' is not allowed (allowed: auto, fused, chunked)"]
    assert list(tmp_path.iterdir()) == []


def test_dry_run_shows_dim_dependent_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shown = {}
    for dim in (2, 3):
        code, out, _ = run(["pretrain", "--dim", str(dim), "--dry-run"], monkeypatch, capsys)
        assert code == 0
        shown[dim] = yaml.safe_load(out)
    from cover.config import resolve_pretrain_config, to_dict

    for dim in (2, 3):
        expected = to_dict(resolve_pretrain_config({"dim": dim}))
        assert shown[dim] == yaml.safe_load(yaml.safe_dump(expected, sort_keys=False))
    assert shown[2]["size"] != shown[3]["size"] and len(shown[3]["size"]) == 3
    config = Path(tmp_path / "c.yaml")
    config.write_text("steps: 7\nmodel: {window_radius: 1}\n")
    code, out, _ = run(["pretrain", "--config", config, "--steps", "9", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and yaml.safe_load(out)["steps"] == 9 and yaml.safe_load(out)["model"]["window_radius"] == 1
