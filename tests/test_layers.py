"""The rooms of the package and their order: a room imports only rooms below it, and nothing imports in a cycle.

Every module under ``src/cover`` is parsed (``ast``, nothing is imported), with the imports inside
functions too (a lazy import is a dependency as well; one under ``if TYPE_CHECKING:`` is not, it
never runs), and mapped to its room. The order is the
architecture's, top to bottom; the test fails naming the file, the line and the import that goes
up, or the modules of an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Rooms from top to bottom: a module may import its own room and the rooms after it.
ROOMS: tuple[str, ...] = (
    "cli",  # the ``cover`` console script (with ``cover.__main__``)
    "api",  # the public functions, re-exported by ``cover``
    "benchmarking",  # the harness behind ``cover benchmark`` (not ``benchmark``: that name is the API function)
    "analysis",
    "registration",
    "downstream",
    "pretraining",
    # models reads checkpoints with the engine's checkpoint files (cover.engine.checkpoint); the
    # engine imports no model code, so it sits below the loader.
    "models",
    "engine",
    # config resolves pretraining configurations, with the COVER recipe (methods) and nnU-Net
    # backbone defaults (nn), so it sits above them; nothing below imports it.
    "config",
    # training defaults per device (precision, layout, workers, cuDNN, TF32), filled in by config
    "devices",
    "methods",
    "losses",
    "nn",
    "data",
    "views",
    "geometry",
    "runtime",
    "options",  # one declaration per option: the field, its help and flag (imports nothing of cover)
    "errors",
    "cover",  # the package itself: ``__version__``, ``CITATION`` (its ``__getattr__`` reaches api by name)
)

#: Known upward imports, each with the reason it may stay for now: ``(importing module, imported module)``.
#: An entry whose import is gone fails :func:`test_allow_list_names_imports_that_exist`: delete it then.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / "cover").rglob("*.py"))}


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "cover"
    if parts[1] == "__main__":
        return "cli"
    return parts[1]


def imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str, str]]:
    """``(line, imported module, statement)`` for every import of a ``cover`` module, anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text(), str(path))
    # Imports under ``if TYPE_CHECKING:`` never run: they let editors and type checkers follow names
    # (``cover.finetune`` to its module), so they are no dependency and no cycle.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from cover.x import y``: y is a dependency of its own when it is a module
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            if target == "cover" or target.startswith("cover."):
                found.append((node.lineno, target, ast.unparse(node)))
    return found


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[int, str, str]]]]:
    modules = all_modules()
    return modules, {name: imports(name, path, modules) for name, path in modules.items()}


def upward_imports(edges: dict[str, list[tuple[int, str, str]]], modules: dict[str, Path]) -> list[str]:
    problems = []
    for module, found in edges.items():
        path = modules[module]
        where = path.relative_to(SRC.parent) if path.is_relative_to(SRC.parent) else path
        for line, target, statement in sorted(set(found)):
            if (module, target) in ALLOWED:
                continue
            if room(module) not in ROOMS or room(target) not in ROOMS:
                problems.append(f"{where}:{line}: room not in ROOMS: {statement}")
            elif ROOMS.index(room(target)) < ROOMS.index(room(module)):
                problems.append(f"{where}:{line}: {room(module)} imports {room(target)} (a room above it): {statement}")
    return problems


def cycles(edges: dict[str, list[tuple[int, str, str]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    succ = {m: sorted({t for _, t, _ in found if t in edges and t != m}) for m, found in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return components


def test_every_room_imports_only_rooms_below_it():
    modules, edges = graph()
    assert len(modules) > 50 and sum(map(len, edges.values())) > 200  # the walk found the package at all
    problems = upward_imports(edges, modules)
    assert not problems, "imports that go up a room:\n" + "\n".join(problems)


def test_no_import_cycles():
    modules, edges = graph()
    problems = []
    for component in cycles(edges):
        problems.append("cycle: " + " <-> ".join(component))
        for module in component:
            for line, target, statement in sorted(set(edges[module])):
                if target in component and target != module:
                    problems.append(f"  {modules[module].relative_to(SRC.parent)}:{line}: {statement}")
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_allow_list_names_imports_that_exist():
    _, edges = graph()
    present = {(m, t) for m, found in edges.items() for _, t, _ in found}
    assert not set(ALLOWED) - present, f"stale ALLOWED entries: {sorted(set(ALLOWED) - present)}"


def test_public_api_names_modules_below_it():
    """``cover.api`` imports by name (lazily, with importlib): each target exists and lies below api."""
    modules = all_modules()
    tree = ast.parse((SRC / "cover" / "api.py").read_text())
    functions = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "FUNCTIONS"
    )
    assert {"pretrain", "finetune", "evaluate", "predict", "register", "export", "load_pretrained"} <= set(functions)
    for name, target in functions.items():
        assert target in modules, f"cover.api.FUNCTIONS[{name!r}]: no module {target}"
        assert ROOMS.index(room(target)) > ROOMS.index("api"), f"cover.api.FUNCTIONS[{name!r}]: {target} is above api"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import cover.cli.console\n", "cover.cli.console"),
        ("def f():\n    from cover.cli import options\n", "cover.cli.options"),
        ("from . import options\n", "cover.cli.options"),
        ("from ..api import FUNCTIONS\n", "cover.api"),
    ],
)
def test_the_walk_sees_plain_lazy_and_relative_imports(tmp_path, source, expected):
    modules = all_modules()
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = imports("cover.cli.probe", path, modules)
    assert [target for _, target, _ in found] == [expected]
    assert upward_imports({"cover.downstream.probe": found}, {"cover.downstream.probe": path})


def test_the_walk_leaves_out_imports_that_only_type_checkers_run(tmp_path):
    modules = all_modules()
    path = tmp_path / "probe.py"
    path.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cover.cli import options\n"
        "else:\n    import cover.api\n"
    )
    assert [target for _, target, _ in imports("cover.cli.probe", path, modules)] == ["cover.api"]
