"""Settings of the panel.

Everything an instance writes (SQLite database, secret key, the panel's SSH key, logs) lives
in one data folder, ``var/`` by default, so a checkout stays clean and an instance is one
folder to back up. ``DATABASE_URL`` selects the database.

The data folder is 0700 and every file in it 0600 (``panel.instance``): it holds the sessions,
the password hashes and the key to every node.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url

from panel.env import (
    UNIX_SOCKET_PEER,
    BadSetting,
    env_bool,
    env_instance_name,
    env_int,
    env_list,
    env_networks,
    env_redis_url,
    env_secret_key,
    env_str,
    env_words,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("PANEL_DATA_DIR", str(BASE_DIR / "var")))
# Made (private) at start-up by PanelConfig.ready and by the log handler, not here: reading
# the settings writes nothing.
LOG_DIR = DATA_DIR / "log"

# From the environment, or the instance's own key file; a new instance gets one generated at
# start-up (PanelConfig.ready), so the key stays out of the repository and of the settings.
# It signs the queue's tasks: a weak or example key stops the panel (panel/secretkey.py).
SECRET_KEY = env_secret_key("DJANGO_SECRET_KEY", DATA_DIR)
DEBUG = env_bool("DJANGO_DEBUG")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
# Behind a reverse proxy that terminates TLS (docs/OPERATIONS.md): trust its scheme header and
# send the session and CSRF cookies over HTTPS only.
if env_bool("PANEL_BEHIND_HTTPS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env_list("PANEL_TRUSTED_ORIGINS")
# The reverse proxies whose X-Forwarded-For names the client (addresses, networks, and "unix"
# for gunicorn's unix socket): panel/clientaddr.py, the one resolver of the client's address.
PANEL_TRUSTED_PROXIES = env_networks(
    "PANEL_TRUSTED_PROXIES", keywords=frozenset({UNIX_SOCKET_PEER})
)

# Who may read /metrics without a token: Prometheus servers' addresses or networks, as the
# client-address resolver above sees them (behind the proxy: the address nginx saw). Empty
# (the default): only API tokens open it.
PANEL_METRICS_ALLOW = env_networks("PANEL_METRICS_ALLOW")

INSTALLED_APPS = [
    "panel.apps.PanelConfig",  # first: its ready() makes the data folder private
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_q",
    "axes",
    "nodes",
    "sync",
    "web",
    # The JSON API, and django-ninja for its docs page's assets (served here, not a CDN).
    "ninja",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Only the panel's own scripts, styles and forms (panel/csp.py).
    "panel.csp.ContentSecurityPolicyMiddleware",
    # Static files from the web server process itself, compressed and cache-busted.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
                "web.context_processors.cluster",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_PATH = DATA_DIR / "panel.sqlite3"
try:
    _DATABASE = dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}"),
        conn_max_age=0,
        conn_health_checks=True,
    )
except ValueError as e:
    raise BadSetting(f"DATABASE_URL is not a database URL Django knows: {e}") from None
DATABASES = {"default": _DATABASE}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend, with the database file (and so its -wal/-shm) created 0600.
    _db["ENGINE"] = "panel.sqlite"
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

# The accounts hold root on every node: 12 characters at least, not like the user's name, not
# a common password, not only digits. (Applies wherever a password is set through a form or
# `changepassword`; bootstrap's generated password meets it.)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login throttling (django-axes) ---------------------------------------------------------
# Checked first: a locked-out login is refused before any password is hashed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# 5 wrong passwords for one user from one address lock that user out from that address for
# 15 minutes. The pair, not the user name alone: an attacker elsewhere cannot lock the admin
# out from everywhere by guessing wrong on purpose. The web login and the admin's login both
# count. A right password (before the lockout) starts the count again.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# The client's address behind the reverse proxy, as the rest of the panel sees it.
AXES_CLIENT_IP_CALLABLE = "panel.clientaddr.client_address"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
# Served by whitenoise: `collectstatic` (make run does it) gives hashed, compressed copies
# cached for a year; before it, the files are served as they are (panel.staticfiles).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "panel.staticfiles.PanelStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Before the first collectstatic the folder is missing, and that is fine (see above).
warnings.filterwarnings("ignore", message="No directory at")
# collectstatic (and any upload) writes under the data folder: keep to its modes.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# A session lasts PANEL_SESSION_HOURS (12) from the login, not Django's two weeks: a login
# holds root on the fleet, and a cookie left on a shared computer should not for long.
SESSION_COOKIE_AGE = env_int("PANEL_SESSION_HOURS", 12, minimum=1, maximum=24 * 31) * 3600

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "nodes:list"
LOGOUT_REDIRECT_URL = "login"

# The cluster status (Stat) lives in the cache: a database cache is shared by all processes.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "panel_cache",
    },
    # The nodes list's rendered rows, keyed by every value a row shows (web/rows.py): each
    # process's own memory, never shared, so a lookup costs no query.
    "rows": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "node-rows",
        "TIMEOUT": 120,
        "OPTIONS": {"MAX_ENTRIES": 2000},
    },
}

# --- django-q2 ------------------------------------------------------------------------------
# One task runs one batch of node sessions; a session is bounded by SYNC["session_budget"].
# retry > timeout so a running task is never handed out twice; failed tasks are not retried
# by django-q (our own tables own retries and backoff); queue_limit ~ workers because the
# retry clock starts when a task is prefetched.
Q_WORKERS = env_int("PANEL_Q_WORKERS", 2, minimum=1, maximum=64)
# The queue's name is the instance's own (panel/env.py: every machine of one panel derives the
# same one from the shared database), so panels that share a Redis never take each other's
# tasks; it also salts the tasks' signatures.
# Where the web server listens when started by hand (runpanel, gunicorn's settings): the
# address `bootstrap` prints. `make run PORT=8080` sets it. Parsed by web.serving.
PANEL_BIND = env_str("PANEL_BIND", "127.0.0.1:8000")

PANEL_INSTANCE_NAME = env_instance_name("PANEL_INSTANCE_NAME", DATABASES["default"])
Q_CLUSTER = {
    "name": PANEL_INSTANCE_NAME,
    "orm": "default",
    "workers": Q_WORKERS,
    "queue_limit": Q_WORKERS,
    "timeout": 1800,
    "retry": 1900,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": env_int("PANEL_Q_SAVE_LIMIT", 500),
    "poll": 0.2,
    "label": "Tasks",
}


# The cluster's processes keep their database connection between tasks for this long (seconds;
# 0: a new connection per task, as the web server does), checked before each task's first
# query (CONN_HEALTH_CHECKS), so a restarted database costs one reconnection, not a failure.
# A worker's node sessions write the database many times a second: a new connection per task
# would cost more than their bookkeeping (docs/OPERATIONS.md).
CLUSTER_CONN_MAX_AGE = env_int("PANEL_CLUSTER_CONN_MAX_AGE", 300, minimum=0, maximum=86400)

# A cluster not heard from for this long counts as not running: every page says so and
# /healthz answers 503. Each cluster writes its heartbeat every third of it (sync/heartbeat.py).
PANEL_CLUSTER_LATE_SECONDS = env_int("PANEL_CLUSTER_LATE_SECONDS", 90, minimum=3, maximum=3600)

# --- Alerts (sync/alerts/, run by `manage.py alerts`) -------------------------------------------
# Where digests of condition changes go: apprise URLs (mailto://, slack://, tgram://, matrix://,
# discord://, json:// ...), separated by spaces. They hold passwords and tokens: the panel never
# shows or logs one whole (docs/OPERATIONS.md, "Alerts").
PANEL_ALERT_URLS = env_words("PANEL_ALERT_URLS")
# At most one digest per channel this often, listing every change since the last one.
PANEL_ALERT_DIGEST_SECONDS = env_int("PANEL_ALERT_DIGEST_SECONDS", 300, minimum=1, maximum=86400)
# A digest waits this long after the first change it holds, so changes that come together
# (a switch taking down a rack) go together rather than one node now and the rest later.
PANEL_ALERT_GATHER_SECONDS = env_int("PANEL_ALERT_GATHER_SECONDS", 20, minimum=0, maximum=3600)
# A receiver that is down is tried again after this long, then twice as long each time, up to
# an hour, for as long as it takes: no digest is dropped.
PANEL_ALERT_RETRY_SECONDS = env_int("PANEL_ALERT_RETRY_SECONDS", 30, minimum=1, maximum=3600)

# PANEL_REDIS_URL switches the queue from the database (ORM broker) to Redis. django-q picks
# the ORM broker whenever "orm" is set, so the key goes.
# A password-less TCP address needs PANEL_REDIS_INSECURE=1 (panel/env.py says why).
if REDIS_URL := env_redis_url("PANEL_REDIS_URL", "PANEL_REDIS_INSECURE"):
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = REDIS_URL

# --- The synchronization engine -------------------------------------------------------------
SYNC = {
    # A node lease is renewed every lease_seconds / 3 while a session runs.
    "lease_seconds": env_int("PANEL_LEASE_SECONDS", 60, minimum=1),
    # Exponential backoff after failures: base * 2**(attempts-1), capped, with jitter.
    "backoff_base_seconds": 10,
    "backoff_cap_seconds": 900,
    # Nodes per django-q task: their sessions share one event loop in one worker.
    "batch_size": env_int("PANEL_BATCH_SIZE", 25, minimum=1, maximum=1000),
    # A task with room in its batch takes further due nodes (how many run at once must not
    # depend on how the work arrived): it looks this often, and takes only nodes whose work
    # has waited this long, which leaves a just-registered node's own task the time to start
    # it (so one registration's work still spreads over every worker).
    "take_due_every_seconds": 0.5,
    "take_due_after_seconds": 1.0,
    # A session stops taking new types after this long and leaves the rest to the next task.
    "session_budget_seconds": 1200,
    "log_cap_chars": 20000,
    # The run history keeps this many runs per node and type (the newest).
    "runs_kept_per_type": env_int("PANEL_RUNS_KEPT_PER_TYPE", 50, minimum=1),
    # The health probe runs on every node not heard from for this long (through the sweep's
    # schedule, so at most about once a minute); a node whose connections have failed for
    # longer than the grace period is "unreachable".
    "probe_seconds": env_int("PANEL_PROBE_SECONDS", 60, minimum=1),
    "unreachable_grace_seconds": env_int("PANEL_UNREACHABLE_GRACE_SECONDS", 40),
    # A node's facts (OS, kernel, CPUs, memory, disk, boot time) are collected again when
    # they are older than this (the Ready-state "facts" type, registered by the health pass).
    "facts_seconds": env_int("PANEL_FACTS_SECONDS", 3600, minimum=60),
    # Work waiting this long with no successful run on its node marks the node "stuck".
    "stuck_seconds": env_int("PANEL_STUCK_SECONDS", 1800, minimum=1),
    # Modules with synchronizer types of the site's own, imported after the built-in ones.
    "extra_modules": env_list("PANEL_SYNCHRONIZER_MODULES"),
}

# --- Checks on nodes before they are saved, and the panel's own server ------------------------
# Adding or editing a node, or accepting its key, scans and proves the host key and logs in
# while a person waits (a web thread, a command): each of these steps ends after this long.
NODE_CHECK_SECONDS = env_int("PANEL_NODE_CHECK_SECONDS", 20, minimum=1, maximum=600)
# This machine's own SSH host keys (ssh_host_*_key.pub): an SSH node that presents one of them
# is the panel's own server (``sync.panelhost``), which only superusers change.
OWN_HOST_KEY_DIR = Path(env_str("PANEL_OWN_HOST_KEY_DIR", "/etc/ssh"))

# Benchmarks and tests only, never production: "dir=PATH,rtt_ms=N,command_ms=N" answers every
# SSH node with a simulated one whose state is kept under PATH (nodes/transports/sim.py), so a
# benchmark can converge thousands of nodes on one machine. No form or page offers it.
SIM_TRANSPORT = env_str("PANEL_SIM_TRANSPORT", "")

# Where synchronizers keep their manifests on each node (what the panel put there).
SYNC_NODE_STATE_DIR = env_str("PANEL_NODE_STATE_DIR", "/var/lib/cluster-panel")
# Where each node keeps the lock of its one session at a time (emptied by a reboot).
SYNC_NODE_RUN_DIR = env_str("PANEL_NODE_RUN_DIR", "/run/cluster-panel")

# A worker keeps each SSH node's connection and runner open between sessions for this long
# after its last session (0: every session connects anew), so a re-sync costs its commands,
# not a handshake (nodes/transports/warm.py). The health probe does not trust a warm
# connection older than PANEL_PROBE_FRESH_SECONDS: it connects anew, so a node whose sshd
# died while a connection stayed open still turns unreachable.
PANEL_SSH_IDLE_SECONDS = env_int("PANEL_SSH_IDLE_SECONDS", 300, minimum=0, maximum=86400)
PANEL_PROBE_FRESH_SECONDS = env_int("PANEL_PROBE_FRESH_SECONDS", 300, minimum=0, maximum=86400)
# Each cluster worker looks this often whether a node it keeps a connection to was deleted, put
# in maintenance or changed, and closes that connection (one query, only while it keeps any).
PANEL_SSH_STALE_CHECK_SECONDS = env_int(
    "PANEL_SSH_STALE_CHECK_SECONDS", 10, minimum=1, maximum=3600
)

# The audit trail (who did what) keeps its entries this many days; the health pass prunes.
PANEL_AUDIT_DAYS = env_int("PANEL_AUDIT_DAYS", 365, minimum=1)

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
            # Creates the log file, its folder and its rotated copies private.
            "class": "panel.instance.PrivateRotatingFileHandler",
            "filename": str(LOG_DIR / "panel.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
            "formatter": "plain",
            "delay": True,
        },
    },
    "filters": {"cluster_lifecycle": {"()": "panel.logfilters.ClusterLifecycleOnly"}},
    "root": {"handlers": ["console", "file"], "level": "WARNING"},
    "loggers": {
        "sync": {"handlers": ["console", "file"], "level": "INFO", "propagate": False},
        "nodes": {"handlers": ["console", "file"], "level": "INFO", "propagate": False},
        # apprise's lines may quote a channel's URL (passwords, tokens): they go nowhere, the
        # alerts process captures them and logs them masked (sync/alerts/channels.py).
        "apprise": {"handlers": [], "level": "WARNING", "propagate": False},
        # django-q's logger is "django-q"; only its cluster's lifecycle at INFO.
        "django-q": {
            "handlers": ["console", "file"],
            "level": "INFO",
            "filters": ["cluster_lifecycle"],
            "propagate": False,
        },
    },
}
