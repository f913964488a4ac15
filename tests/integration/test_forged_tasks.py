"""A local user must not run code as the panel by pushing a task into its queue.

django-q unpickles and runs whatever a task signed with the secret key names. The attack: an
unprivileged user of the panel's machine (``nobody``, a real process under ``runuser``) signs a
task with a key it can guess and pushes it into the real Redis the cluster reads, with no
password. The task makes a marker folder as the cluster's user.

Every configuration that makes this possible (a placeholder or weak key, a password-less
Redis on TCP without ``PANEL_REDIS_INSECURE=1``) must stop the cluster before it takes a task:
exit 2, one line. With an accepted configuration (a long random key) the forged task is
dropped, while a task signed with the real key and pushed the same way runs: the channel works,
only the signature decides.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_q import core_signing
from django_q.signing import PickleSerializer

from tests.conftest import process_env
from tests.integration.conftest import REDIS_ADDRESS, QCluster, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as the user nobody needs root"),
    pytest.mark.cluster,
]

REDIS_DB = 10
ATTACKER = "nobody"
# What deploy/env.example used to ship, and what people paste from it.
PLACEHOLDER_KEY = "change-me"
# The system's own Python (a shim or virtualenv under /root is not for nobody to run).
SYSTEM_PYTHON = "/usr/bin/python3"

# The attacker's side: plain Python of the system, no access to the panel's code or files; a
# raw RESP conversation with Redis (the socket is all it needs).
PUSH = r"""
import socket, sys
host, port, db, queue = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
payload = sys.stdin.buffer.read()
def command(*parts):
    out = b"*%d\r\n" % len(parts)
    for part in parts:
        part = part if isinstance(part, bytes) else part.encode()
        out += b"$%d\r\n%s\r\n" % (len(part), part)
    return out
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(command("SELECT", db) + command("RPUSH", queue, payload))
    reply = b""
    while reply.count(b"\r\n") < 2:
        chunk = s.recv(100)
        if not chunk:
            break
        reply += chunk
sys.stdout.write(reply.decode())
"""


def forged_task(key: str, marker: Path) -> bytes:
    """A django-q task that makes ``marker`` (a folder), signed with ``key`` as django-q signs."""
    task = {
        "id": uuid.uuid4().hex,
        "name": f"forged-{marker.name}",
        "func": "os.mkdir",
        "args": (str(marker),),
        "kwargs": {},
        "started": timezone.now(),
        "ack_failure": True,
    }
    salt = settings.Q_CLUSTER["name"]  # django-q's PREFIX, the cluster's name
    signed = core_signing.dumps(
        task, key=key, salt=salt, compress=True, serializer=PickleSerializer
    )
    return signed.encode()


def push_as_attacker(payload: bytes) -> None:
    """``nobody`` pushes ``payload`` onto the panel's queue in Redis database REDIS_DB."""
    queue = f"django_q:{settings.Q_CLUSTER['name']}:q"
    host, port = REDIS_ADDRESS
    done = subprocess.run(
        ["runuser", "-u", ATTACKER, "--", SYSTEM_PYTHON, "-I"]
        + ["-c", PUSH, host, str(port), str(REDIS_DB), queue],
        input=payload,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"+OK\r\n:"), done.stdout  # SELECT ok, RPUSH's new length


def random_key() -> str:
    return secrets.token_urlsafe(50)


def cluster_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = process_env(PANEL_REDIS_URL=redis_url, **extra)
    if "PANEL_REDIS_INSECURE" not in extra:
        env.pop("PANEL_REDIS_INSECURE", None)
    return env


REFUSED = {
    # name: (secret key, extra settings, the line's start)
    "placeholder key": (
        PLACEHOLDER_KEY,
        {"PANEL_REDIS_INSECURE": "1"},
        "error: DJANGO_SECRET_KEY is a placeholder",
    ),
    "long placeholder key": (
        "please-change-me-to-a-long-random-string-of-at-least-50-characters",
        {"PANEL_REDIS_INSECURE": "1"},
        "error: DJANGO_SECRET_KEY is a placeholder",
    ),
    "short key": (
        secrets.token_urlsafe(30),
        {"PANEL_REDIS_INSECURE": "1"},
        "error: DJANGO_SECRET_KEY is too weak",
    ),
    "django-insecure key": (
        "django-insecure-" + secrets.token_urlsafe(50),
        {"PANEL_REDIS_INSECURE": "1"},
        "error: DJANGO_SECRET_KEY is too weak",
    ),
    # A good key, but any local user may write to this Redis: the admin has not said so.
    "password-less redis": (random_key(), {}, "error: PANEL_REDIS_URL has no password"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_configuration_never_starts_a_cluster_that_runs_a_forged_task(
    case, redis_db, transactional_db, tmp_path
):
    key, extra, line = REFUSED[case]
    url = redis_db(REDIS_DB)
    marker = tmp_path / "forged-ran"
    # The attacker knows (or guessed) the key this configuration uses.
    push_as_attacker(forged_task(key, marker))

    cluster = QCluster(tmp_path / "qcluster.log", cluster_env(url, DJANGO_SECRET_KEY=key, **extra))
    try:
        wait_for(lambda: not cluster.alive or marker.exists(), timeout=60)
    finally:
        cluster.stop()
    assert not marker.exists(), f"the forged task ran as the panel ({case})"
    assert cluster.proc.returncode == 2
    output = cluster.output
    assert output.startswith(line) and output.count("\n") == 1, output
    assert key not in output  # the key is never shown


def test_an_accepted_configuration_runs_only_tasks_signed_with_its_own_key(
    redis_db, transactional_db, tmp_path
):
    url = redis_db(REDIS_DB)
    key = random_key()
    forged = tmp_path / "forged-ran"
    genuine = tmp_path / "genuine-ran"
    # First the task signed with the placeholder, then one signed with the real key: the
    # queue is first in, first out, so once the second has run the first was taken.
    push_as_attacker(forged_task(PLACEHOLDER_KEY, forged))
    push_as_attacker(forged_task(key, genuine))

    cluster = QCluster(
        tmp_path / "qcluster.log",
        cluster_env(url, DJANGO_SECRET_KEY=key, PANEL_REDIS_INSECURE="1"),
    )
    try:

        def genuine_ran():
            """the task signed with the panel's key to run"""
            assert cluster.alive, cluster.output
            return genuine.exists()

        wait_for(genuine_ran, timeout=60)
    finally:
        cluster.stop()
    assert not forged.exists(), "the task signed with the placeholder key ran"
    assert "Failed to push task to queue" in cluster.output  # dropped: its signature is bad
