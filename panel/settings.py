"""Settings of the panel.

Everything an instance writes (SQLite database, secret key, the panel's SSH key, logs) lives
in one data folder, ``var/`` by default, so a checkout stays clean and an instance is one
folder to back up. ``DATABASE_URL`` selects the database.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PANEL_DATA_DIR", BASE_DIR / "var"))
LOG_DIR = DATA_DIR / "log"
LOG_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The secret key is generated once per instance and kept out of the repository."""
    if key := os.environ.get("DJANGO_SECRET_KEY"):
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_q",
    "nodes",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "panel.urls"
WSGI_APPLICATION = "panel.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_PATH = DATA_DIR / "panel.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"),
        conn_max_age=0,
        conn_health_checks=True,
    )
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL, IMMEDIATE transactions and a long busy timeout keep the web server, the django-q
    # cluster and the commands from failing with "database is locked" (see docs/OPERATIONS.md).
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: the django-q cluster started by a test runs in other processes.
    _db["TEST"] = {"NAME": str(DATA_DIR / "test-panel.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.mysql":
    _db["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
    _db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# django-q2's partial index is plain on MariaDB, which is harmless (it only narrows the index).
SILENCED_SYSTEM_CHECKS = ["models.W037"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "nodes:list"
LOGOUT_REDIRECT_URL = "login"

# The cluster status (Stat) lives in the cache: a database cache is shared by all processes.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "panel_cache",
    }
}

# --- django-q2 ------------------------------------------------------------------------------
# One task runs one batch of node sessions; a session is bounded by SYNC["session_budget"].
# retry > timeout so a running task is never handed out twice; failed tasks are not retried
# by django-q (our own tables own retries and backoff); queue_limit ~ workers because the
# retry clock starts when a task is prefetched.
Q_WORKERS = int(os.environ.get("PANEL_Q_WORKERS", "2"))
Q_CLUSTER = {
    "name": "panel",
    "orm": "default",
    "workers": Q_WORKERS,
    "queue_limit": Q_WORKERS,
    "timeout": 1800,
    "retry": 1900,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": int(os.environ.get("PANEL_Q_SAVE_LIMIT", "500")),
    "poll": 0.2,
    "label": "Tasks",
}

# --- The synchronization engine -------------------------------------------------------------
SYNC = {
    # A node lease is renewed every lease_seconds / 3 while a session runs.
    "lease_seconds": int(os.environ.get("PANEL_LEASE_SECONDS", "60")),
    # Exponential backoff after failures: base * 2**(attempts-1), capped, with jitter.
    "backoff_base_seconds": 10,
    "backoff_cap_seconds": 900,
    # Nodes per django-q task: their sessions share one event loop in one worker.
    "batch_size": 25,
    # A session stops taking new types after this long and leaves the rest to the next task.
    "session_budget_seconds": 1200,
    "log_cap_chars": 20000,
    # Modules with synchronizer types of the site's own, imported after the built-in ones.
    "extra_modules": [m for m in os.environ.get("PANEL_SYNCHRONIZER_MODULES", "").split(",") if m],
}

# Where synchronizers keep their manifests on each node (what the panel put there).
SYNC_NODE_STATE_DIR = os.environ.get("PANEL_NODE_STATE_DIR", "/var/lib/cluster-panel")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(LOG_DIR / "panel.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
            "formatter": "plain",
            "delay": True,
        },
    },
    "root": {"handlers": ["console", "file"], "level": "WARNING"},
    "loggers": {
        "sync": {"handlers": ["console", "file"], "level": "INFO", "propagate": False},
        "nodes": {"handlers": ["console", "file"], "level": "INFO", "propagate": False},
        "django_q": {"handlers": ["console", "file"], "level": "INFO", "propagate": False},
    },
}
