"""The layers of DESIGN.md hold: a core that knows no room, rooms that know only the core.

Every module's imports are read, those inside functions and ``TYPE_CHECKING`` blocks
included, and so are the module names a module starts or loads by name (``-m name``
in an argument list, ``importlib.import_module("name")``):

- the plumbing core (``prefloop``) imports no room and no part of the top layer;
- a room (``prefloop.streams``, ``.serving``, ``.training``, ``.analytics``) imports
  the core only, never another room nor the top layer;
- the top layer (``prefloop.loop``: commands and orchestration, ``prefloop.infra``:
  the local stack's launchers) may import anything;
- no module imports itself back through others (no cycle).

The project's modules are found from ``package-dir`` in ``pyproject.toml``, so a new
room or a new folder is checked without touching this test.
"""

from __future__ import annotations

import ast
import itertools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CORE = "prefloop"
ROOMS = ("prefloop.streams", "prefloop.serving", "prefloop.training", "prefloop.analytics")
TOP = ("prefloop.loop", "prefloop.infra")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module it names
    path: Path  # relative to the tree's root
    line: int
    text: str  # how it reads in the source
    runs: bool = False  # names a module to start as a process (``-m name``), not an import

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project -> its file, from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    package_dirs: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    modules: dict[str, Path] = {}
    for package, folder in package_dirs.items():
        base = root / folder
        nested = [other for other in package_dirs.values() if other != folder]
        for path in sorted(base.rglob("*.py")):
            if any(root / other in path.parents for other in nested if other.startswith(folder)):
                continue  # a sub-package mapped to a folder of its own
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> str:
    for top in TOP:
        if module == top or module.startswith(top + "."):
            return top
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            return room
    return CORE


# calls that take a module's name as a string: loading it, or reading its resources
_BY_NAME = {"import_module", "find_spec", "files"}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that ``name`` (a module or an attribute of one) is."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def read_imports(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[Import]:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    found: list[Import] = []

    def add(node: ast.AST, name: str, runs: bool = False) -> None:
        target = _resolve(name, modules)
        if target is not None and target != module:
            text = (ast.get_source_segment(source, node) or name).splitlines()[0]
            line = node.lineno  # type: ignore[attr-defined]
            found.append(Import(module, target, path.relative_to(root), line, text, runs))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module, path).split(".")
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                add(node, f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in _BY_NAME and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    add(node, first.value)
        elif isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for flag, name in itertools.pairwise(items):
                if (
                    isinstance(flag, ast.Constant)
                    and flag.value == "-m"
                    and isinstance(name, ast.Constant)
                    and isinstance(name.value, str)
                ):
                    add(node, name.value, runs=True)
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = project_modules(root)
    found = [
        imp for module, path in modules.items() for imp in read_imports(module, path, modules, root)
    ]
    return list(dict.fromkeys(found))  # once per line and target (``from a import b, c``)


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source in TOP or source == target or target == CORE:
            continue
        if source == CORE:
            kind = "the top layer" if target in TOP else f"the room {target}"
            problems.append(f"{imp.where()}  (the core imports {kind})")
        elif target in TOP:
            problems.append(f"{imp.where()}  ({source} imports the top layer {target})")
        else:
            problems.append(f"{imp.where()}  (the room {source} imports the room {target})")
    return problems


def import_cycles(imports: list[Import]) -> list[list[Import]]:
    """One cycle of imports for each strongly connected group of modules (Tarjan).

    A module started as a process is not imported by the one that starts it: such a
    name counts for the layers, not for cycles.
    """
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.runs:
            continue
        edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_one_cycle(sorted(group)[0], group, edges) for group in groups]


def _one_cycle(start: str, group: set[str], edges: dict[str, dict[str, Import]]) -> list[Import]:
    """The shortest way from ``start`` back to itself inside its group (breadth first)."""
    came_from: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt, imp in sorted(edges.get(node, {}).items()):
                if nxt not in group or nxt in came_from:
                    continue
                came_from[nxt] = imp
                if nxt == start:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, came_from[path[0].source])
                    return path
                following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_check_sees_every_room_and_the_top_layer() -> None:
    modules = project_modules()
    layers = {layer_of(module) for module in modules}
    assert {CORE, *ROOMS, *TOP} <= layers, sorted(layers)
    assert len(all_imports()) > 200  # a reader that found nothing would pass anything


def test_no_layer_imports_what_it_must_not() -> None:
    problems = layer_violations(all_imports())
    assert not problems, "imports across the layers of DESIGN.md:\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    cycles = import_cycles(all_imports())
    described = [
        " -> ".join([cycle[0].source, *(imp.target for imp in cycle)])
        + "".join(f"\n    {imp.where()}" for imp in cycle)
        for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_the_check_fails_on_each_kind_of_fault(tmp_path: Path) -> None:
    """A small tree with one fault of each kind: each is named with its file and line."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "prefloop" = "prefloop", '
        '"prefloop.streams" = "streams", "prefloop.analytics" = "analytics", '
        '"prefloop.loop" = "loop" }\n'
    )
    files = {
        "prefloop/__init__.py": "",
        "prefloop/settings.py": "from prefloop import kafka\n",
        "prefloop/kafka.py": "def start():\n    from prefloop.settings import x\n",
        "prefloop/runner.py": 'ARGV = ["python", "-m", "prefloop.analytics.owner"]\n',
        "streams/__init__.py": "",
        "streams/app.py": "import importlib\nimportlib.import_module('prefloop.analytics.sink')\n",
        "analytics/__init__.py": "",
        "analytics/owner.py": "import prefloop.loop\n",
        "analytics/sink.py": "from . import owner\n",
        "loop/__init__.py": "",
        "loop/cli.py": "from prefloop.streams import app\nfrom prefloop.analytics import sink\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    imports = all_imports(tmp_path)
    problems = sorted(layer_violations(imports))
    assert len(problems) == 3, problems
    assert problems[0].startswith("analytics/owner.py:1: import prefloop.loop")
    assert "prefloop/runner.py:1:" in problems[1] and "the room prefloop.analytics" in problems[1]
    assert (
        "streams/app.py:2:" in problems[2] and "imports the room prefloop.analytics" in problems[2]
    )
    cycles = import_cycles(imports)
    assert [[imp.source for imp in cycle] for cycle in cycles] == [
        ["prefloop.kafka", "prefloop.settings"]
    ]
