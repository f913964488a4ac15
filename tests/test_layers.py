"""The apps depend one way: ``nodes`` (inventory) < ``sync`` (synchronization) < ``web``
(pages) and ``api`` (the coming API), which are siblings: neither imports the other, and what
both need (the actions, the list's queries) lives in ``sync``.

A lower app that imports a higher one is a cycle waiting to happen (migrations that depend on
each other, models reaching across through ``_meta``): this test names the line that does it.
Historical migrations are left out: they reference validators by their path at the time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Levels from the bottom; apps on one level are siblings. An app that does not exist yet
# (``api``) is simply not scanned.
LEVELS = [["nodes"], ["sync"], ["web", "api"]]
LAYERS = [app for level in LEVELS for app in level]
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


def forbidden(app: str) -> set[str]:
    """The apps ``app`` may not import: every higher level, and its siblings."""
    level = next(i for i, apps in enumerate(LEVELS) if app in apps)
    higher = {a for apps in LEVELS[level + 1 :] for a in apps}
    return higher | (set(LEVELS[level]) - {app})


def violations(app: str) -> list[str]:
    higher = forbidden(app)
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


def test_web_and_api_are_siblings(tmp_path, monkeypatch):
    """The pages may not import the API nor the API the pages; both may import ``sync``."""
    for app, other in (("web", "api"), ("api", "web")):
        (tmp_path / app).mkdir()
        (tmp_path / app / "x.py").write_text(
            f"from sync.actions import register_work\nfrom {other}.views import y\n"
        )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert violations("web") == ["web/x.py:2 imports api.views"]
    assert violations("api") == ["api/x.py:2 imports web.views"]
