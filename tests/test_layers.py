"""The apps depend one way: ``nodes`` (inventory) < ``sync`` (synchronization) < ``web`` (pages).

A lower app that imports a higher one is a cycle waiting to happen (migrations that depend on
each other, models reaching across through ``_meta``): this test names the line that does it.
Historical migrations are left out: they reference validators by their path at the time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["nodes", "sync", "web"]
# What every app may use from the project package: its instance files, not its urls.
PANEL_FOUNDATION = {"panel.instance", "panel.settings"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def violations(app: str) -> list[str]:
    higher = LAYERS[LAYERS.index(app) + 1 :]
    bad = []
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in higher or (top == "panel" and module not in PANEL_FOUNDATION):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("app", LAYERS)
def test_no_app_imports_a_higher_one(app):
    assert violations(app) == []


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The test itself works: a lower module importing a higher one is reported."""
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "bad.py").write_text("def f():\n    from web.views import x\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations("nodes") == ["nodes/bad.py:2 imports web.views"]
