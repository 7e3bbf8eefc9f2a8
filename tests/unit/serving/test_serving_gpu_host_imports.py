"""The back ends and bench/gpu/backend_gpu.py run on a GPU host that has only the model stack.

GPU hosts have torch, transformers, tokenizers and accelerate, but neither
prefloop's other dependencies nor prefloop installed; the script loads the
back-end modules from the checkout as bare packages (no ``__init__``), so every
module it reaches, followed import by import, may use only these.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ON_GPU_HOSTS = {"torch", "transformers", "tokenizers", "safetensors"}
# the packages the script registers bare, and where their modules live
PACKAGES = {
    "prefloop.serving.backends": ROOT / "serving/backends",
    "prefloop_sdk": ROOT / "sdk/python/prefloop_sdk",
    "prefloop": ROOT / "prefloop",
}
SCRIPT = ROOT / "bench/gpu/backend_gpu.py"


def module_file(name: str) -> Path | None:
    for package, folder in PACKAGES.items():
        if name.startswith(package + "."):
            rest = name[len(package) + 1 :].split(".")
            return folder.joinpath(*rest).with_suffix(".py")
    return None


def imports(path: Path, package: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def reached(start: Path, package: str) -> dict[str, set[str]]:
    """Every module imported from ``start``, following prefloop's own: {module: importers}."""
    seen: dict[str, set[str]] = {}
    todo = [(start, package)]
    while todo:
        path, pkg = todo.pop()
        for name in imports(path, pkg):
            if name not in seen:
                found = module_file(name)
                if found is not None and found.is_file():
                    todo.append((found, name.rpartition(".")[0]))
            seen.setdefault(name, set()).add(path.name)
    return seen


def test_the_gpu_script_reaches_only_the_model_stack_and_the_standard_library():
    allowed = ON_GPU_HOSTS | {"ray"}  # ray: only when it is installed, imported inside a function
    problems = {}
    for name, importers in reached(SCRIPT, "bench.gpu").items():
        root = name.split(".")[0]
        if root in sys.stdlib_module_names or root in allowed:
            continue
        found = module_file(name)
        if found is None or not found.is_file():
            problems[name] = sorted(importers)
    assert problems == {}, f"modules a GPU host cannot import: {problems}"


def test_the_walk_follows_prefloop_modules():
    names = reached(SCRIPT, "bench.gpu")
    assert "prefloop.serving.backends.hf" in names
    assert "prefloop_sdk.errors" in names  # through exceptions.py and prefloop.errors
    assert {"torch", "transformers", "tokenizers"} <= set(names)
