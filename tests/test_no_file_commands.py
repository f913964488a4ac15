"""No synchronizer reads or changes a file's state with a command that names its path.

``stat``, ``sha256sum``, ``chmod`` and ``chown`` each look the path up again: between two of
them, a user who owns a folder on the way re-points the name at any file of root's (issue:
a managed file's owner made root chmod /etc/shadow). Synchronizers use the transport's
``stat_files`` and ``set_attrs`` instead, which work on one descriptor. This reads every
synchronizer module's source (fast, no node): an argument list, or a shell script passed to
``sh -c``, that runs one of those programs fails the test.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SYNCHRONIZERS = Path(__file__).resolve().parent.parent / "sync" / "synchronizers"
BY_PATH = {"stat", "sha256sum", "chmod", "chown"}
IN_A_SCRIPT = re.compile(r"(^|[\s;&|(`{])(?:\S*/)?(stat|sha256sum|chmod|chown)(\s|$)")


def _strings(node: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def commands_by_path(source: str) -> list[str]:
    """The argument lists (list or tuple literals) of ``source`` that run a program of
    BY_PATH, or a shell whose script does; as ``line: program``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.List | ast.Tuple) or not node.elts:
            continue
        first = node.elts[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        program = first.value.rsplit("/", 1)[-1]
        if program in BY_PATH:
            found.append(f"{node.lineno}: {program}")
        elif program in {"sh", "bash", "dash"}:
            for text in _strings(node):
                if match := IN_A_SCRIPT.search(text):
                    found.append(f"{node.lineno}: {match.group(2)} in a script")
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in SYNCHRONIZERS.glob("*.py")))
def test_no_synchronizer_runs_stat_sha256sum_chmod_or_chown(module):
    assert commands_by_path((SYNCHRONIZERS / module).read_text()) == []


@pytest.mark.parametrize(
    "planted",
    [
        'await ctx.transport.run(["chmod", f"{mode:04o}", "--", path])',
        'argv = ["stat", "--printf=%a\\t%U\\t%G\\t%n\\\\0", "--", *paths]',
        'await t.run(("/usr/bin/sha256sum", "-z", "--", *paths), check=False)',
        'await t.run(["chown", "--", owner, path])',
        'await t.run(["sh", "-c", "chown \\"$1\\" \\"$2\\"", "panel", owner, path])',
        'await t.run(["sh", "-c", "x=$(stat -c %a \\"$1\\")", "panel", path])',
    ],
)
def test_the_scan_catches_a_planted_command(planted):
    assert commands_by_path(f"async def f(ctx, t, path, paths, mode, owner):\n    {planted}\n")


def test_the_scan_leaves_other_commands_alone():
    source = 'argv = ["systemctl", "status", "chmod"]\nx = ["sh", "-c", "command -v update-rc.d"]'
    assert commands_by_path(source) == []
