"""Pages, commands and the admin change nodes, their work and the fleet's data only through
the actions (``sync.actions``): a scan of their code finds no write of those tables and no
call of the engine's writers, and the scan itself is proved on a planted example."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The models whose rows only actions write (the engine's tables, the inventory, the data).
GUARDED_MODELS = {
    "Node",
    "Node2Sync",
    "Role",
    "ManagedFile",
    "ManagedUser",
    "Package",
    "Service",
}
# Writes on a queryset or manager of those models.
QUERYSET_WRITES = {
    "update",
    "create",
    "delete",
    "bulk_create",
    "bulk_update",
    "get_or_create",
    "update_or_create",
}
# Writes on a row (or a form saving one) and on its links.
ROW_WRITES = {"save", "delete"}
LINK_WRITES = {"set", "add", "remove", "clear"}
LINKS = {"roles", "nodes", "files"}
# What the engine and the inventory offer that changes those tables: actions wrap them.
WRITERS = {
    "register_desync",
    "retry_now",
    "set_maintenance",
    "take_over_node",
    "cancel_node",
    "skip_desyncs",
    "add_node",
    "accept_host_key",
    "pin_host_key",
    "pin_proved_key",
}


APPS = ("nodes", "sync", "web")


def scanned_files(root: Path) -> list[Path]:
    """The callers: the pages, every management command, every admin module."""
    files = list((root / "web").rglob("*.py"))
    for app in APPS:
        files += list(root.glob(f"{app}/management/commands/*.py"))
        files += list(root.glob(f"{app}/admin.py")) + list(root.glob(f"{app}/*_admin.py"))
    files += [root / "sync" / "synchronizers" / "_roles.py"]
    return sorted(f for f in files if f.exists() and "migrations" not in f.parts)


def _chain(node: ast.AST) -> list[str]:
    """Names along an attribute/call chain: ``Node.objects.filter(x).update`` ->
    [Node, objects, filter, update]."""
    names: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return names[::-1]


def _is_commit_false(call: ast.Call) -> bool:
    return any(
        k.arg == "commit" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in call.keywords
    )


def action_names(tree: ast.AST) -> set[str]:
    """Names bound to the actions in a module (``from sync import actions as x``, ``from
    sync.actions import add_node``): calling those is the point."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "sync":
            names |= {a.asname or a.name for a in node.names if a.name == "actions"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sync.actions"):
            names |= {a.asname or a.name for a in node.names}
    return names


def writes(path: Path, root: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed = action_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{path.relative_to(root)}:{node.lineno}"
        if isinstance(node.func, ast.Name) and node.func.id in WRITERS - allowed:
            found.append(f"{where} calls {node.func.id}")
            continue
        if not isinstance(node.func, ast.Attribute):
            continue
        chain = _chain(node.func)
        method = node.func.attr
        if method in WRITERS and chain[0] not in allowed:
            found.append(f"{where} calls {method}")
        elif method in QUERYSET_WRITES and "objects" in chain and set(chain) & GUARDED_MODELS:
            found.append(f"{where} writes {chain[0]} ({method})")
        elif method in ROW_WRITES and "objects" not in chain and not _is_commit_false(node):
            found.append(f"{where} {method}s a row ({'.'.join(chain)})")
        elif method in LINK_WRITES and len(chain) >= 2 and chain[-2] in LINKS:
            found.append(f"{where} changes links ({'.'.join(chain)})")
    return found


def all_writes(root: Path) -> list[str]:
    return [w for f in scanned_files(root) for w in writes(f, root)]


def test_no_page_command_or_admin_writes_the_tables_itself():
    assert all_writes(ROOT) == []


def test_the_scan_finds_a_planted_write(tmp_path):
    (tmp_path / "web" / "views").mkdir(parents=True)
    (tmp_path / "web" / "views" / "planted.py").write_text(
        "from sync import actions\n"
        "from sync.engine import set_maintenance\n"
        "def view(request, node, form):\n"
        "    Node.objects.filter(pk=node.pk).update(maintenance=True)\n"
        "    node.save(update_fields=['name'])\n"
        "    node.roles.set([])\n"
        "    set_maintenance([node], True)\n"
        "    actions.set_maintenance(actor, [node], True)\n"
        "    form.save(commit=False)\n"
        "    context = {}\n"
        "    context.update(x=1)\n"
    )
    (tmp_path / "sync" / "management" / "commands").mkdir(parents=True)
    (tmp_path / "sync" / "management" / "commands" / "planted.py").write_text(
        "def handle(names):\n    Node2Sync.objects.filter(node__name__in=names).delete()\n"
    )
    assert all_writes(tmp_path) == [
        "sync/management/commands/planted.py:2 writes Node2Sync (delete)",
        "web/views/planted.py:4 writes Node (update)",
        "web/views/planted.py:5 saves a row (node.save)",
        "web/views/planted.py:6 changes links (node.roles.set)",
        "web/views/planted.py:7 calls set_maintenance",
    ]


ADMIN_WRITES = ("save_model", "save_related", "delete_model", "delete_queryset")


def test_every_admin_of_those_tables_writes_through_the_actions():
    """The admin's default save and delete write the row themselves: each admin of a guarded
    model overrides all four (read-only engine tables answer no add or change at all)."""
    from django.contrib import admin
    from django.contrib.admin import ModelAdmin

    guarded = {
        model: model_admin
        for model, model_admin in admin.site._registry.items()
        if model.__name__ in GUARDED_MODELS | {"Node2Sync"}
    }
    assert {m.__name__ for m in guarded} == GUARDED_MODELS | {"Node2Sync"}
    for model, model_admin in guarded.items():
        inherited = [
            name
            for name in ADMIN_WRITES
            if getattr(type(model_admin), name) is getattr(ModelAdmin, name)
        ]
        if model.__name__ == "Node2Sync":
            # Never added or changed here; its delete is a skip.
            assert not model_admin.has_add_permission(None)
            assert not model_admin.has_change_permission(None)
            inherited = [n for n in inherited if n not in ("save_model", "save_related")]
        assert inherited == [], f"{model.__name__}'s admin writes itself: {inherited}"


def test_the_admins_raw_fields_for_the_engine_are_read_only():
    from django.contrib import admin

    from nodes.models import Node
    from sync.models import SyncAction

    node_admin = admin.site._registry[Node]
    assert {"maintenance", "host_key"} <= set(node_admin.readonly_fields)
    assert {"priority", "node_status"} <= set(admin.site._registry[SyncAction].readonly_fields)
