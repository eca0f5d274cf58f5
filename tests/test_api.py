"""The public API: names editors can follow, a fast ``import cover``, and docstring examples that run."""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cover
import cover.api
from cover.runtime import reset_logging

SRC = Path(__file__).resolve().parents[1] / "src" / "cover"

#: The order the examples run in: later ones use what earlier ones wrote (``runs/demo``, ``runs/seg``, ...).
EXAMPLE_ORDER = (
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "register",
    "export",
    "load_pretrained",
    "analyze",
    "benchmark",
    "configure_logging",
)


def type_checking_imports(path: Path) -> dict[str, str]:
    """Name -> module of every ``from X import name`` under ``if TYPE_CHECKING:`` in ``path``."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
                found.update({alias.name: statement.module for alias in statement.names})
    return found


def test_type_checkers_see_the_modules_the_api_imports_at_run_time():
    # a name added to FUNCTIONS but not to the TYPE_CHECKING imports (or with another module)
    # would be invisible or wrong to editors; one only imported there would fail at run time
    assert type_checking_imports(SRC / "api.py") == cover.api.FUNCTIONS
    assert sorted(cover.api.__all__) == sorted(cover.api.FUNCTIONS)
    assert type_checking_imports(SRC / "__init__.py") == dict.fromkeys(cover.api.__all__, "cover.api")


@pytest.mark.parametrize("name", sorted(cover.api.FUNCTIONS))
def test_each_public_name_is_the_function_of_its_module(name):
    function = getattr(importlib.import_module(cover.api.FUNCTIONS[name]), name)
    assert getattr(cover, name) is function and getattr(cover.api, name) is function
    assert function.__module__ == cover.api.FUNCTIONS[name]
    assert name in dir(cover) and name in dir(cover.api)


def test_cover_benchmark_is_the_function_after_its_harness_is_imported():
    # the harness once lived in the sub-package ``cover.benchmark``: importing it bound that name
    # on ``cover`` to the package, over the function
    from cover.benchmarking.runner import benchmark

    assert cover.api.benchmark is benchmark
    assert cover.benchmark is benchmark


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'pretrian'"):
        cover.pretrian  # noqa: B018


def test_import_cover_and_its_api_import_no_torch():
    # ``import cover`` took 40 ms of import time where importing every API module takes the
    # seconds of torch, MONAI and all rooms: the API modules load on first use
    probe = "import sys, cover, cover.api; print(sorted(m for m in ('torch', 'monai', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    tests = finder.find(cover, "cover")
    for name in EXAMPLE_ORDER:
        function = getattr(cover.api, name)
        tests += finder.find(function, f"cover.{name}", module=sys.modules[function.__module__], globs={})
    return tests


def test_every_public_function_has_examples():
    examples = {test.name.removeprefix("cover.") for test in docstring_tests() if test.examples}
    assert set(cover.api.__all__) <= examples and "cover" in examples
    assert set(EXAMPLE_ORDER) == set(cover.api.__all__)


@pytest.mark.slow
def test_docstring_examples_run(tmp_path, monkeypatch):
    """Every ``Examples:`` section, run in order in one folder (two training steps each, the demo data)."""
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    try:
        for test in docstring_tests():
            result = runner.run(test, out=report.append)
            assert not result.failed, f"{test.name}:\n" + "".join(report)
    finally:
        reset_logging()
    assert runner.summarize(verbose=False).attempted >= 30
