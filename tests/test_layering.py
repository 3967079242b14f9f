"""Arrows only point down: chainrule -> {api, worker} -> core -> engine (DESIGN.md).

Every import in every module, at the top or inside a function, is checked: a lazy import
that points up is as much a cycle as an eager one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"engine", "core", "api", "worker", "chainrule", "migrations"}
# what each package must never import (besides itself)
FORBIDDEN = {
    "engine": OURS - {"engine"},
    "core": {"api", "worker", "chainrule", "fastapi", "starlette", "uvicorn"},
    "api": {"worker", "chainrule"},
    "worker": {"api", "chainrule", "fastapi", "starlette", "uvicorn"},
    "migrations": {"api", "worker", "chainrule"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_points_up(package):
    assert modules(package), f"{package}/ has no modules"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in modules(package) for line, name in imports(path) if name in FORBIDDEN[package]]
    assert wrong == []


def test_only_the_composition_root_imports_both_api_and_worker():
    both = []
    for package in OURS:
        names = {name for path in modules(package) for _, name in imports(path)}
        if {"api", "worker"} <= names:
            both.append(package)
    assert both == ["chainrule"]


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule would fail on a lazy upward import (so the test above is not vacuous)."""
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from api.main import create_app\n    import worker.app\n")
    assert [name for _, name in imports(bad)] == ["api", "worker"]
