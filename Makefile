# Set-up and everyday commands of the panel. `make run` and `make test` do all the set-up
# themselves on a fresh machine: the virtualenv, the install, the system packages they need.
#
#   make run     set up, migrate, bootstrap, then serve http://127.0.0.1:8000 with the cluster
#                (PORT=8080 or ADDR=0.0.0.0 to listen elsewhere; they set PANEL_BIND)
#   make demo    like make run, with a few real sshd nodes on loopback added (Ctrl-C removes them)
#   make test    set up and run the whole test suite (DATABASE_URL=mysql://... for MariaDB)
#   make test-distributed  only the Redis broker and several-machines tests (root, MariaDB)
#   make lint    ruff check
#   make sysdeps install the missing system packages (apt-get) that `make test` needs

.DEFAULT_GOAL := help
# Everything here installs into one virtualenv: never run two pip installs at once.
.NOTPARALLEL:

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# Where `make run` and `make demo` listen: PORT=8080 (and ADDR=...) set PANEL_BIND, which
# bootstrap (the address it prints), runpanel and gunicorn all read. Without them, PANEL_BIND
# from the environment, else 127.0.0.1:8000.
ifneq ($(PORT)$(ADDR),)
export PANEL_BIND := $(or $(ADDR),127.0.0.1):$(or $(PORT),8000)
endif

# DATABASE_URL selects the database (SQLite under var/ when unset); MariaDB needs the
# `mysql` extra (mysqlclient), which is built against libmariadb.
ifneq ($(filter mysql%,$(DATABASE_URL)),)
USE_MYSQL := 1
endif

MYSQL_SYSDEPS := libmariadb-dev pkg-config
# openssh-server: the tests start real sshd processes as test nodes (sudo: one installs the
# panel's key as a sudoer, sudo -S); chromium: the browser
# tests drive Debian's chromium with Playwright (never a downloaded browser); nginx: the
# login-throttle test runs the shipped proxy settings in front of gunicorn; prometheus: its
# promtool checks the example scrape config and alert rules in deploy/prometheus/.
SYSDEPS := openssh-server sudo chromium nginx prometheus $(if $(USE_MYSQL),$(MYSQL_SYSDEPS))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

RUN_DEPS := $(VENV)/.installed $(if $(USE_MYSQL),$(VENV)/.installed-mysql)
TEST_DEPS := $(VENV)/.installed-test $(if $(USE_MYSQL),$(VENV)/.installed-mysql)

# $(call apt-ensure,PKG ...): install with apt-get those of the packages that are missing.
# libmariadb also counts as present when pkg-config finds it (installed some other way).
define apt-ensure
missing=""; \
for pkg in $(1); do \
  if [ "$$pkg" = libmariadb-dev ] && pkg-config --exists libmariadb 2>/dev/null; then continue; fi; \
  dpkg -s "$$pkg" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
done; \
if [ -n "$$missing" ]; then \
  echo "Installing system packages:$$missing"; \
  $(SUDO) apt-get update && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
fi
endef

.PHONY: help run demo test test-distributed lint sysdeps install

help:
	@echo "make run      set up (venv, install, migrate, bootstrap) and start the panel"
	@echo "              with its django-q cluster on http://127.0.0.1:8000 (PORT=8080 ADDR=...)"
	@echo "make demo     like make run, plus a few real sshd nodes on loopback (as root)"
	@echo "make test     set up and run the whole test suite (PYTEST_ARGS=... to pass options)"
	@echo "              DATABASE_URL=mysql://root@127.0.0.1:3306/panel make test: on MariaDB"
	@echo "make test-distributed  only the Redis broker and several-machines tests (as root,"
	@echo "              with DATABASE_URL=mysql://... and Redis on 127.0.0.1:6379)"
	@echo "make lint     ruff check"
	@echo "make sysdeps  install the missing system packages (apt-get)"
	@echo "make install  only create the virtualenv and install the project"

run: $(RUN_DEPS)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py bootstrap
	$(PY) manage.py runpanel

# A live fleet to look at: real sshd nodes on loopback, added to the panel (tools/demo.py).
demo: $(RUN_DEPS)
	@$(call apt-ensure,openssh-server)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py bootstrap
	$(PY) -m tools.demo $(DEMO_ARGS)

test: sysdeps $(TEST_DEPS)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Also part of `make test`; on SQLite the several-machines test skips (it needs MariaDB).
test-distributed: sysdeps $(TEST_DEPS)
	$(VENV)/bin/pytest tests/integration/test_distributed.py $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

sysdeps:
	@$(call apt-ensure,$(SYSDEPS))

install: $(RUN_DEPS)

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (python3.11 or python3)"; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "$(PYTHON) is older than Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Stamps: reinstall when pyproject.toml changes; the install is editable, so code changes
# need nothing.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -e '.[test]'
	@touch $@

$(VENV)/.installed-mysql: pyproject.toml | $(PY)
	@$(call apt-ensure,$(MYSQL_SYSDEPS))
	$(PIP) install -e '.[mysql]'
	@touch $@
