"""Documentation references: code and docs cite docs/method.md sections that exist, never a missing design file."""

import re
from pathlib import Path

import pytest
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


# --- The user guide's blocks run ------------------------------------------------------------------
# Conventions (CONTRIBUTING.md, "The user guide is tested"): every ```bash and ```python block of
# the pages below runs, in this order, in one folder that holds small example data (FOLDERS); a
# block after `<!-- needs: REASON -->` does not; a ```text block right after a block is output
# that must appear (`...` matches anything; such a block runs as written); ```yaml blocks must
# parse, and one whose first line is `# NAME.yaml` is written to NAME.yaml. In the other blocks'
# `cover` commands `--steps`, `--size` and `--batch-size`, and in Python `steps=` and `size=`,
# become tiny, and every `cover pretrain` run gets a small U-Net (TINY): the test checks that the
# commands work, and the guide's full-width 3D network alone took 31 of its 157 CPU seconds.

#: The guide's pages in the order they run: later pages use the runs earlier ones wrote.
GUIDE = (
    "README.md",
    "docs/getting-started.md",
    "docs/pretraining.md",
    "docs/finetuning.md",
    "docs/registration.md",
    "docs/interop.md",
    "docs/monai.md",
    "docs/nnunet.md",
    "docs/benchmark.md",
    "docs/troubleshooting.md",
)
#: The example folders the guide's commands read, made by :func:`example_data`.
FOLDERS = ("xray", "ct", "mri", "images", "labels", "test_images", "test_labels", "new_scans")
#: The quick preset's U-Net, as flags and as ``cover.pretrain`` keywords.
TINY_UNET_FLAGS = "--channels 8,16,32,64,128,64,32,16,8 --heads 2,2,2,1,1 --head-dim 4"
TINY_UNET_KEYWORDS = "channels=[8, 16, 32, 64, 128, 64, 32, 16, 8], heads=[2, 2, 2, 1, 1], head_dim=4"
TINY = (
    (r"^cover pretrain\b", f"cover pretrain {TINY_UNET_FLAGS}"),
    (r"\bcover\.pretrain\(", f"cover.pretrain({TINY_UNET_KEYWORDS}, "),
    (r"--steps \d+", "--steps 2"),
    (r"--size [\d,]+", "--size 32"),
    (r"--batch-size \d+", "--batch-size 2"),
    (r"\bsteps=\d+", "steps=2"),
    (r"\bsize=\d+", "size=32"),
)


def blocks(page: str) -> list[dict]:
    """The fenced blocks of ``page``: language, code, first line, ``needs`` reason and expected output."""
    lines = (ROOT / page).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        needs = re.fullmatch(r"<!-- needs: (.+) -->", before.strip())
        found.append(
            {
                "lang": lines[start][3:].strip(),
                "code": "\n".join(lines[start + 1 : end]),
                "line": start + 1,
                "needs": needs.group(1) if needs else None,
                "expect": None,
            }
        )
        i = end + 1
        if found[-1]["lang"] == "text" and len(found) > 1 and not lines[start - 1].strip():
            found[-2]["expect"] = found[-1]["code"]
    return found


def tiny(code: str) -> str:
    for pattern, replacement in TINY:
        code = re.sub(pattern, replacement, code, flags=re.M)
    return code


def commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines left out."""
    import shlex

    joined = code.replace("\\\n", " ")
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def example_data(root: Path) -> None:
    """The guide's example folders: the demo's labeled MNI152 slices (PNG) and small CT / MRI volumes."""
    import shutil

    import nibabel as nib
    import numpy as np

    from cover.data.demo import write_demo_task

    paths = write_demo_task(root / "demo_slices", size=64)
    for name in ("images", "labels", "test_images", "test_labels"):
        shutil.copytree(paths[name], root / name)
    shutil.copytree(paths["test_images"], root / "new_scans")
    shutil.copytree(paths["images"], root / "xray")
    shutil.rmtree(root / "demo_slices")
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:40, :40, :40]
    for kind, (outside, body_value, dtype) in {"ct": (-1000, 40, np.int16), "mri": (0, 600, np.float32)}.items():
        (root / kind).mkdir()
        for case in range(3):
            body = (z - 20) ** 2 + (y - 20 - case) ** 2 + (x - 20) ** 2 < (14 + case) ** 2
            organ = (z - 18) ** 2 + (y - 16) ** 2 + (x - 22 + case) ** 2 < 36
            volume = np.where(body, body_value, outside) + 150.0 * organ + rng.normal(0, 10, body.shape)
            image = nib.Nifti1Image(volume.astype(dtype), np.diag([1.5, 1.5, 2.0, 1.0]))
            nib.save(image, root / kind / f"case{case}.nii.gz")
    assert all((root / name).is_dir() for name in FOLDERS)


def matches(expected: str, output: str) -> bool:
    """Every line of ``expected`` occurs in ``output``, ``...`` matching anything."""
    for line in expected.strip().splitlines():
        pattern = ".*".join(map(re.escape, line.strip().split("...")))
        if not re.search(pattern, output):
            return False
    return True


def run_shell(code: str, monkeypatch, capsys) -> tuple[int, str]:
    import subprocess

    from _support.cli import run_cli_output

    status, output = 0, ""
    for command in commands(code):
        import shlex

        words = shlex.split(command, comments=True)
        if words[0] == "cover":
            status, out, err = run_cli_output(words[1:], monkeypatch, capsys)
            output += out + "\n".join(err) + "\n"
        else:
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
            status, output = done.returncode, output + done.stdout + done.stderr
        if status:
            break
    return status, output


def run_python(code: str, namespace: dict, capsys) -> str:
    exec(compile(code, "<guide>", "exec"), namespace)
    return capsys.readouterr().out


def test_guide_blocks_are_run_or_say_what_they_need():
    for page in GUIDE:
        for block in blocks(page):
            if block["lang"] in {"bash", "python"} and block["needs"] is not None:
                assert len(block["needs"]) > 3, f"{page}:{block['line']}: say what the block needs"
            assert block["lang"] in {"bash", "python", "yaml", "text", "bibtex", ""}, (
                f"{page}:{block['line']}: unknown block language {block['lang']!r}"
            )


@pytest.mark.slow
def test_guide_blocks_run(tmp_path, monkeypatch, capsys):
    """Every runnable block of the guide, page by page in :data:`GUIDE` order, in one folder."""
    import yaml

    from cover.runtime import reset_logging

    example_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    ran = 0
    try:
        for page in GUIDE:
            namespace: dict = {"__name__": "__guide__"}
            for block in blocks(page):
                where = f"{page}:{block['line']}"
                if block["lang"] == "yaml":
                    yaml.safe_load(block["code"])
                    name = re.fullmatch(r"# (\S+\.yaml)", block["code"].splitlines()[0])
                    if name:
                        Path(name.group(1)).write_text(block["code"])
                if block["lang"] not in {"bash", "python"} or block["needs"]:
                    continue
                capsys.readouterr()
                code = block["code"] if block["expect"] else tiny(block["code"])
                if block["lang"] == "bash":
                    status, output = run_shell(code, monkeypatch, capsys)
                    assert status == 0 or block["expect"], f"{where}: exit status {status}\n{output[-3000:]}"
                else:
                    output = run_python(code, namespace, capsys)
                if block["expect"]:
                    expected = block["expect"]
                    assert matches(expected, output), f"{where}: expected\n{expected}\ngot\n{output[-3000:]}"
                ran += 1
    finally:
        reset_logging()
    assert ran >= 20
