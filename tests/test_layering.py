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


CLIENT_MODULES = ("client", "client_config", "client_http", "client_extras")
CLIENT = [f"chainrule/{m}.py" for m in CLIENT_MODULES] + [*sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "chainrule" / "commands").glob("*.py"))]


def test_the_client_speaks_only_http():
    """chainrule.client and the client commands import nothing of the service, so they run against
    a remote server from a machine that has only the client's dependencies."""
    wrong = []
    for rel in CLIENT:
        tree = ast.parse((ROOT / rel).read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = (node.module or "").split(".")[0]
                if node.level > 2 or (node.level == 2 and target not in CLIENT_MODULES) or \
                        (node.level == 1 and rel.startswith("chainrule/client") and target not in CLIENT_MODULES):
                    wrong.append(f"{rel}:{node.lineno} imports {'.' * node.level}{node.module}")
        wrong += [f"{rel}:{line} imports {name}" for line, name in imports(ROOT / rel) if name in OURS]
    assert wrong == []
