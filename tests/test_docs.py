"""Documentation references: code and docs cite docs/method.md sections that exist, never a missing design file."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"


def text_files():
    for entry in ("src", "tests", "benchmarks", "docs", "README.md"):
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.suffix in {".py", ".md", ".yaml"} and file != Path(__file__).resolve():
                yield file


def test_method_sections_cited_in_code_and_docs_exist():
    text = METHOD.read_text()
    sections = set(re.findall(r"^## (§\d+) ", text, flags=re.M))
    deviations = set(re.findall(r"^\*\*(D\d+)\. ", text, flags=re.M))
    assert {f"§{i}" for i in range(1, 14)} <= sections and {"D1", "D5"} <= deviations
    cited = 0
    for file in text_files():
        name = file.relative_to(ROOT)
        content = file.read_text(errors="replace")
        assert "DESIGN" not in content, f"{name} cites a design file that is not in the repository"
        for line in content.splitlines():
            if "docs/method.md" not in line or file == METHOD:
                continue
            for section in re.findall(r"§\d+", line):
                assert section in sections, f"{name} cites docs/method.md {section}, which does not exist"
                cited += 1
            for deviation in re.findall(r"§11 (D\d+)", line):
                assert deviation in deviations, f"{name} cites docs/method.md §11 {deviation}, which does not exist"
    assert cited >= 15  # the citations were found at all


def markdown_table(text: str, header: str) -> list[list[str]]:
    """Cells of the table whose header row starts with ``header`` (separator row dropped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def literal(cell: str):
    assert cell.startswith("`") and cell.endswith("`"), cell
    return yaml.safe_load(cell.strip("`"))


def test_view_settings_table_states_the_code_defaults():
    """§3's settings table against ``ViewConfig.reference`` and the demo's resolved views: changing a
    view default (or adding a setting) without its row fails here."""
    from cover.config import resolve_pretrain_config, to_dict
    from cover.views import ViewConfig

    columns = [
        to_dict(ViewConfig.reference(2)),
        to_dict(ViewConfig.reference(3)),
        to_dict(resolve_pretrain_config({}).views),
    ]
    rows = markdown_table(METHOD.read_text(), "| setting | 2D reference | 3D reference | 2D demo |")
    assert [literal(row[0]) for row in rows] == list(columns[0])
    for row in rows:
        for cell, values in zip(row[1:4], columns, strict=True):
            assert literal(cell) == values[literal(row[0])], (row[0], cell)


def test_recipe_table_states_the_code_recipes_and_the_default():
    """§10's recipe table against ``RECIPES`` and ``RECIPE_SCHEDULES``, and its stated default."""
    from cover.methods.cover import DEFAULT_RECIPE, RECIPE_SCHEDULES, RECIPES

    text = METHOD.read_text()
    rows = markdown_table(text, "| recipe | options | beyond the loss |")
    assert [literal(row[0]) for row in rows] == list(RECIPES)
    for name, options, schedule in rows:
        assert literal(options) == RECIPES[literal(name)], name
        assert literal(schedule) == RECIPE_SCHEDULES.get(literal(name), {}), name
    assert re.findall(r"^\*\*Default: `([\w-]+)`\.\*\*", text, flags=re.M) == [DEFAULT_RECIPE]
