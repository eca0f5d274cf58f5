"""``docs/options.md`` states the options the code declares, with the code's defaults."""

from __future__ import annotations

import re
from pathlib import Path

from cover.cli.reference import options_page
from cover.config import PretrainConfig
from cover.downstream.config import FinetuneConfig
from cover.options import option_rows

PAGE = Path(__file__).resolve().parents[2] / "docs" / "options.md"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| [^|]* \| `(?P<default>[^`]*)` \|")


def _documented(section: str) -> dict[str, str]:
    text = PAGE.read_text().split(f"## cover {section}\n", 1)[1].split("\n## ", 1)[0]
    return {m["key"]: m["default"] for m in map(ROW.match, text.splitlines()) if m}


def test_documented_defaults_are_the_code_defaults():
    for section, cls in (("pretrain", PretrainConfig), ("finetune", FinetuneConfig)):
        code = {key: default for key, default, _ in option_rows(cls)}
        assert _documented(section) == code, f"docs/options.md, cover {section}: run python -m cover.cli.reference"


def test_options_page_is_generated_from_the_declarations():
    assert PAGE.read_text() == options_page(), "docs/options.md is stale: run python -m cover.cli.reference"
