import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, process_env


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll until ``predicate()`` is truthy; return its value or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {predicate.__doc__ or predicate}")
        time.sleep(interval)


@pytest.fixture
def qcluster(transactional_db, tmp_path):
    """A real django-q cluster (``manage.py qcluster``) against the test database."""
    log = open(tmp_path / "qcluster.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "qcluster"],
        cwd=ROOT,
        env=process_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    print(log.read()[-4000:])  # shown by pytest when the test failed
    log.close()
