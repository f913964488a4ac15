"""Browser tests: Playwright for Python driving Debian's chromium against the live server.

Playwright's sync API runs an event loop in the test thread, so Django's async-safety check
would refuse the tests' own ORM calls; the variable below lets them through (the live server
and the engine run in their own threads, where no loop runs).

The engine really runs: a background thread starts every node with due work, as the django-q
cluster would. Only test-only synchronizer types exist during these tests: the built-in ones
would change this machine when they run on a local node.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from django.db import connection  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "e2e-pass-123"


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per module (never a downloaded browser).

    Module scope, not session: while Playwright lives, the test thread has a running event
    loop, which would break ``async_to_sync`` in the tests that run after these.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A page in a fresh context; every test that uses it also checks that the page's own
    Content-Security-Policy (panel/csp.py) refused nothing it needs: a refusal is a console
    error naming the policy."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert not refused, f"the Content-Security-Policy refused: {refused}"


@pytest.fixture(autouse=True)
def only_test_types(transactional_db):
    from sync.models import SyncAction

    SyncAction.objects.all().delete()


def _user(django_user_model, username: str, group: str):
    from django.contrib.auth.models import Group

    from nodes.access import ensure_groups

    ensure_groups()
    user = django_user_model.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator(transactional_db, django_user_model):
    return _user(django_user_model, "operator", "Operators")


@pytest.fixture
def superuser(transactional_db, django_user_model):
    """Only superusers may add the panel's own server as a node."""
    user = _user(django_user_model, "chief", "Operators")
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


@pytest.fixture
def reader(transactional_db, django_user_model):
    return _user(django_user_model, "reader", "Read-only")


def login(page, user) -> None:
    """Log in through the login page, as a person would."""
    page.goto("/nodes/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/nodes/")


class Engine:
    """The cluster's work loop in a thread: ``run_nodes(due_node_ids())`` and the cluster's
    heartbeat every 0.2 s."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="e2e-engine", daemon=True)
            self.thread.start()

    def _loop(self) -> None:
        from sync.engine import due_node_ids, run_nodes
        from sync.heartbeat import beat

        try:
            while not self.stop.is_set():
                try:
                    beat()  # as a cluster does: the pages show no "cluster not running" banner
                    node_ids = due_node_ids()
                    if node_ids:
                        run_nodes(node_ids)
                except Exception as e:  # noqa: BLE001 - reported by the fixture's teardown
                    self.errors.append(e)
                self.stop.wait(0.2)
        finally:
            connection.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


@pytest.fixture
def engine(transactional_db, make_type):
    """Start it with ``engine.start()`` when the test is ready to watch.

    Depends on ``make_type`` so that it stops before the test types are removed.
    """
    engine = Engine()
    yield engine
    engine.close()
    assert not engine.errors, engine.errors
