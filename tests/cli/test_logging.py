"""``cover --quiet`` / ``--verbose``: what a real command writes on stderr, and what it leaves behind."""

from __future__ import annotations

import logging
import re

import yaml

from _support.cli import run_cli_output as run

DEBUG_LINE = re.compile(r"\[ *\d+\.\d\ds cover(\.[a-z_]+)*\] ")


def test_quiet_and_verbose_exclude_each_other(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for flags in (["--quiet", "--verbose"], ["-v", "-q"]):
        code, out, lines = run([*flags, "pretrain", "--dry-run"], monkeypatch, capsys)
        assert code == 2 and out == "" and lines == ["error: --quiet and --verbose exclude each other; give one"]
    assert list(tmp_path.iterdir()) == []


def test_verbose_adds_debug_lines_and_keeps_the_result_on_stdout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, plain, lines = run(["pretrain", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and lines == []
    code, out, lines = run(["--verbose", "pretrain", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and out == plain and yaml.safe_load(out)["dim"] == 2
    assert lines and all(DEBUG_LINE.match(line) for line in lines), lines
    assert re.search(r"\] cover \S+, torch \S+, Python \S+", lines[0]), lines


def test_a_warning_keeps_its_one_line_form_under_quiet_and_verbose(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    warning = "warning: --preset is deprecated for the intensity preset; use --intensity"
    code, out, lines = run(["-q", "pretrain", "--preset", "mri", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and yaml.safe_load(out)["intensity"] == "mri" and lines == [warning]
    code, out, lines = run(["-v", "pretrain", "--preset", "mri", "--dry-run"], monkeypatch, capsys)
    assert [DEBUG_LINE.sub("", line) for line in lines if "deprecated" in line] == [warning]
    assert re.match(
        r"\[ *\d+\.\d\ds cover\.cli\.options\] warning: --preset", [x for x in lines if "deprecated" in x][0]
    )


def test_main_leaves_logging_as_it_found_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(["-v", "pretrain", "--dry-run"], monkeypatch, capsys)
    cover_logger = logging.getLogger("cover")
    assert cover_logger.handlers == [] and cover_logger.level == logging.NOTSET and cover_logger.propagate


def _tiny_pretrain(tmp_path, name: str, *flags: str) -> list:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"warmup_steps": 1, "eval_pairs": 2, "log_every": 1}))
    args = ["pretrain", "--config", config, "--size", "32", "--batch-size", "2", "--steps", "1", "--device", "cpu"]
    args += ["--channels", "8,16,32,16,8", "--heads", "2,2,1", "--head-dim", "4", "--lr", "1e-6"]
    return [*flags, *args, "--out", tmp_path / name]


def test_quiet_and_verbose_on_a_real_pretraining_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COVER_MEMORY_CHECK", "0")
    warning = "warning: lr 1e-06 is "  # 10x or more below the default rate: a warning, kept by --quiet
    code, out, lines = run(_tiny_pretrain(tmp_path, "default"), monkeypatch, capsys)
    assert code == 0 and out == ""
    assert any(line.startswith(warning) for line in lines)
    assert any(line.startswith("cover pretrain: method=cover") for line in lines)
    assert any(line.startswith("endpoint error ") and "of the demo's held-out slab" in line for line in lines)
    assert any(line.startswith("pretrain: 100%") for line in lines), lines  # the progress bar
    assert not any(DEBUG_LINE.match(line) for line in lines)

    code, out, lines = run(_tiny_pretrain(tmp_path, "quiet", "--quiet"), monkeypatch, capsys)
    assert code == 0 and out == "" and len(lines) == 1 and lines[0].startswith(warning), lines
    assert (tmp_path / "quiet" / "summary.json").is_file()

    code, out, lines = run(_tiny_pretrain(tmp_path, "verbose", "-v"), monkeypatch, capsys)
    assert code == 0 and out == ""
    saved = [line for line in lines if re.match(r"\[ *\d+\.\d\ds cover\.engine\.checkpoint\] checkpoint saved: ", line)]
    assert len(saved) == 1 and saved[0].endswith("step_00000001.pt"), lines
    announced = r"\[ *\d+\.\d\ds cover\.pretraining\.pretrain\] cover pretrain: method=cover"
    assert any(re.match(announced, x) for x in lines)
