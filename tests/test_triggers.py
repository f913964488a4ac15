"""Changing the panel's data registers the right types for the right nodes, in its transaction."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import transaction

from nodes.models import Node, Role
from sync.models import Node2Sync
from sync.synchronizers.files import ManagedFile
from sync.synchronizers.services import Service
from sync.synchronizers.software import Package
from sync.synchronizers.users import ManagedUser

pytestmark = pytest.mark.django_db

FACTORIES: dict[str, Callable[[], object]] = {
    "software": lambda: Package.objects.create(name="pt-package"),
    "files": lambda: ManagedFile.objects.create(path="/tmp/pt-triggers/app.conf"),
    "users": lambda: ManagedUser.objects.create(name="pttrigger"),
    "services": lambda: Service.objects.create(name="pt-service"),
}
TYPES = list(FACTORIES)


def role_side(role: Role, row) -> object:
    """The role's manager of this kind of row (``role.packages``, ``role.files``...)."""
    return getattr(role, type(row)._meta.get_field("roles").related_query_name())


@pytest.fixture
def web(db) -> Role:
    return Role.objects.create(name="web")


@pytest.fixture
def nodes(make_node, web) -> dict[str, Node]:
    """A web node, a db node, a node without roles; nothing registered yet."""
    db_role = Role.objects.create(name="db")
    made = {name: make_node(name) for name in ("web1", "db1", "bare")}
    made["web1"].roles.add(web)
    made["db1"].roles.add(db_role)
    Node2Sync.objects.all().delete()
    return made


def registered() -> set[tuple[str, str]]:
    return set(Node2Sync.objects.values_list("node__name", "action__name"))


def fresh() -> None:
    Node2Sync.objects.all().delete()


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_nothing_for_a_new_row_without_roles(nodes, type_name):
    FACTORIES[type_name]()
    assert registered() == set()


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_the_nodes_of_a_role_given_to_a_row(nodes, web, type_name):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    assert registered() == {("web1", type_name)}


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_when_a_role_is_given_rows_from_its_side(nodes, web, type_name):
    row = FACTORIES[type_name]()
    role_side(web, row).add(row)
    assert registered() == {("web1", type_name)}


# A change to what the node receives, per type.
CHANGES: dict[str, tuple[str, object]] = {
    "software": ("name", "pt-package-2"),
    "files": ("content", "changed"),
    "users": ("shell", "/bin/sh"),
    "services": ("name", "pt-service-2"),
}


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_the_nodes_of_a_saved_row(nodes, web, type_name):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    fresh()
    setattr(row, *CHANGES[type_name])
    row.save()
    assert registered() == {("web1", type_name)}


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_nothing_for_a_save_that_changes_nothing(nodes, web, type_name):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    fresh()
    row.save()
    type(row).objects.get(pk=row.pk).save()
    assert registered() == set()


@pytest.mark.parametrize("type_name", TYPES)
def test_an_update_registers_like_a_save(nodes, web, type_name):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    fresh()
    field, value = CHANGES[type_name]
    rows = type(row).objects.filter(pk=row.pk)
    rows.update(**{field: getattr(row, field)})  # the same value: nothing changed
    assert registered() == set()
    rows.update(**{field: value})
    assert registered() == {("web1", type_name)}
    fresh()
    setattr(row, field, getattr(row, field) + "x")
    type(row).objects.bulk_update([row], [field])
    assert registered() == {("web1", type_name)}


def test_a_node_that_has_a_row_through_another_role_is_left_alone(nodes, web):
    package = FACTORIES["software"]()
    package.roles.add(web)
    db_role = Role.objects.get(name="db")
    nodes["web1"].roles.add(db_role)
    fresh()
    package.roles.add(db_role)  # db1 gains it; web1 had it already
    assert registered() == {("db1", "software")}
    fresh()
    package.roles.remove(web)  # web1 still has it through db
    assert registered() == set()


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("how", ["remove", "clear", "role-side remove", "role-side clear"])
def test_it_registers_the_nodes_that_lose_a_row(nodes, web, type_name, how):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    fresh()
    from_role = role_side(web, row)
    {
        "remove": lambda: row.roles.remove(web),
        "clear": lambda: row.roles.clear(),
        "role-side remove": lambda: from_role.remove(row),
        "role-side clear": lambda: from_role.clear(),
    }[how]()
    assert registered() == {("web1", type_name)}


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_the_nodes_of_a_deleted_row(nodes, web, type_name):
    row = FACTORIES[type_name]()
    row.roles.add(web)
    fresh()
    row.delete()
    assert registered() == {("web1", type_name)}


@pytest.mark.parametrize("type_name", TYPES)
def test_it_registers_nothing_when_the_change_is_rolled_back(
    nodes, web, type_name, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            FACTORIES[type_name]().roles.add(web)
            assert registered() == {("web1", type_name)}  # same transaction
            raise RuntimeError("rolled back")
    assert registered() == set()
    assert callbacks == []  # no node session is started either


def test_it_starts_the_node_sessions_when_the_change_commits(
    nodes, web, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        with transaction.atomic():
            Package.objects.create(name="pt-package").roles.add(web)
    assert len(callbacks) == 1


def test_it_registers_services_that_reload_on_a_changed_file(nodes, web):
    conf = FACTORIES["files"]()
    conf.roles.add(web)
    service = Service.objects.create(name="pt-service")
    service.roles.add(web)
    service.files.add(conf)
    fresh()

    conf.content = "changed"
    conf.save()
    assert registered() == {("web1", "files"), ("web1", "services")}

    fresh()
    conf.delete()
    assert registered() == {("web1", "files"), ("web1", "services")}

    fresh()
    other = ManagedFile.objects.create(path="/tmp/pt-triggers/other.conf")
    other.roles.add(web)
    assert registered() == {("web1", "files")}  # not one of the service's files


def test_it_registers_services_when_their_files_change(nodes, web):
    conf = FACTORIES["files"]()
    service = Service.objects.create(name="pt-service")
    service.roles.add(web)
    fresh()
    service.files.add(conf)
    assert registered() == {("web1", "services")}
    fresh()
    conf.services.clear()
    assert registered() == {("web1", "services")}
    fresh()
    conf.services.add(service)
    fresh()
    conf.delete()
    assert registered() == set()  # the file had no role: no node received it


def test_it_registers_a_node_that_gains_or_loses_a_role_with_data(nodes, web):
    Package.objects.create(name="pt-package").roles.add(web)
    ManagedUser.objects.create(name="pttrigger").roles.add(web)
    bare = nodes["bare"]
    fresh()

    bare.roles.add(web)
    assert registered() == {("bare", "software"), ("bare", "users")}
    fresh()
    bare.roles.clear()
    assert registered() == {("bare", "software"), ("bare", "users")}
    fresh()
    web.nodes.remove(nodes["web1"])
    assert registered() == {("web1", "software"), ("web1", "users")}


def test_it_registers_nothing_for_a_role_without_data(nodes):
    empty = Role.objects.create(name="empty")
    nodes["bare"].roles.add(empty)
    empty.nodes.clear()
    assert registered() == set()


def test_it_registers_the_nodes_of_a_deleted_role(nodes, web):
    FACTORIES["files"]().roles.add(web)
    fresh()
    web.delete()
    assert registered() == {("web1", "files")}


def test_a_types_data_read_for_a_run_is_what_the_orm_reads(make_node):
    """``Watch.values_for`` (the statement built once) gives what ``rows_for().values()``
    gives: the same rows, each once though two roles give it, booleans as booleans."""
    from sync.synchronizers.files import FILE_FIELDS, FILES
    from sync.synchronizers.users import USER_FIELDS, USERS

    node, other = make_node("n1"), make_node("n2")
    web, db = Role.objects.create(name="web"), Role.objects.create(name="db")
    node.roles.add(web, db)
    other.roles.add(db)
    ManagedUser.objects.create(name="zed", adopt_existing=True).roles.add(web, db)
    ManagedUser.objects.create(name="amy").roles.add(web)
    ManagedFile.objects.create(path="/etc/b", content="b\n", special_bits=True).roles.add(db)
    ManagedFile.objects.create(path="/etc/a", content="a\n").roles.add(web, db)
    for n in (node, other):
        users = USERS.values_for(n.pk, *USER_FIELDS, order_by="name")
        assert users == list(USERS.rows_for(n.pk).order_by("name").values(*USER_FIELDS))
        fields = (*FILE_FIELDS, "special_bits")
        files = FILES.values_for(n.pk, *fields, order_by="path")
        assert files == list(FILES.rows_for(n.pk).order_by("path").values(*fields))
    assert [(u["name"], u["adopt_existing"]) for u in users] == [("zed", True)]
    assert [type(f["special_bits"]) for f in files] == [bool, bool]
