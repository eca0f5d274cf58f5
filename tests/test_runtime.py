"""cover.runtime: the script's message format per verbosity, warnings as one line, and no output by default."""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from cover.runtime import configure_logging, progress_bar, progress_shown, reset_logging

log = logging.getLogger("cover.some.module")


@pytest.fixture(autouse=True)
def _restore_logging():
    reset_logging()
    yield
    reset_logging()


def _emit_all() -> None:
    log.debug("a detail %d", 7)
    log.info("a progress note %s", "x")
    log.warning("a problem")
    log.error("a failure")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_default_verbosity_prints_notes_warnings_and_errors_on_stderr(capsys):
    configure_logging(0)
    _emit_all()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _lines(captured.err) == ["a progress note x", "warning: a problem", "error: a failure"]
    assert progress_shown()


def test_quiet_keeps_warnings_and_errors_only_and_hides_progress_bars(capsys):
    configure_logging(-1)
    _emit_all()
    for _ in progress_bar(range(3), desc="hidden-bar"):
        pass
    captured = capsys.readouterr()
    assert _lines(captured.err) == ["warning: a problem", "error: a failure"]
    assert not progress_shown()


def test_progress_bar_is_shown_by_default_and_keeps_an_explicit_disable(capsys):
    configure_logging(0)
    for _ in progress_bar(range(3), desc="shown-bar"):
        pass
    for _ in progress_bar(range(3), desc="off-bar", disable=True):
        pass
    err = capsys.readouterr().err
    assert "shown-bar" in err and "3/3" in err and "off-bar" not in err


def test_verbose_adds_debug_lines_led_by_seconds_and_module(capsys):
    configure_logging(1)
    _emit_all()
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 4
    pattern = r"\[ *\d+\.\d\ds cover\.some\.module\] "
    expected = ["a detail 7", "a progress note x", "warning: a problem", "error: a failure"]
    for line, text in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern + re.escape(text), line), line


def test_configuring_twice_replaces_the_handler(capsys):
    configure_logging(0)
    configure_logging(0)
    log.info("once")
    assert _lines(capsys.readouterr().err) == ["once"]


def test_python_warnings_are_left_to_python_and_reset_restores_the_default(capsys):
    showwarning = warnings.showwarning
    configure_logging(-1)
    assert warnings.showwarning is showwarning  # catch_warnings(record=True) and pytest.warns still see them
    with pytest.warns(UserWarning, match="still recorded"):
        warnings.warn("still recorded", UserWarning, stacklevel=1)
    reset_logging()
    assert logging.getLogger("cover").handlers == []
    assert logging.getLogger("cover").level == logging.NOTSET and logging.getLogger("cover").propagate


def test_the_library_prints_nothing_unconfigured_but_logs_records(capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="cover"):
        log.info("a progress note")
        log.debug("a detail")
    assert capsys.readouterr().err == ""
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("cover.some.module", logging.INFO, "a progress note"),
        ("cover.some.module", logging.DEBUG, "a detail"),
    ]


def test_an_unknown_verbosity_is_refused():
    with pytest.raises(ValueError, match="verbosity: 2 is not one of"):
        configure_logging(2)


LIBRARY_RUN = """
import sys
import cover
model = {"channels": [8, 16, 32, 16, 8], "heads": [2, 2, 1], "head_dim": 4}
cover.pretrain(out=sys.argv[1], size=32, batch_size=2, steps=1, warmup_steps=1, eval_pairs=2, lr=1e-6, model=model)
"""


def test_the_api_unconfigured_prints_no_notes_but_python_still_shows_its_warnings(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COVER_MEMORY_CHECK": "0"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_RUN, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "" and (out / "summary.json").is_file()
    lines = [line.strip() for line in re.split(r"[\r\n]", result.stderr) if line.strip()]
    bar = [line for line in lines if line.startswith("pretrain:")]
    others = [line for line in lines if not line.startswith("pretrain:")]
    # Python's last-resort handler shows a WARNING record, bare; progress notes (INFO) stay silent.
    assert len(others) == 1 and others[0].startswith("lr 1e-06 is 707x below 0.000707"), others
    assert bar and bar[-1].startswith("pretrain: 100%")  # bars stay on unless the cover logger is set above INFO
