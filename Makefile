# metasync — the README's two commands are `make demo` and `make test`.
# Everything bootstraps itself: venv, dependencies, the private devstack
# (PostgreSQL with TLS + wal_level=logical, Redis, Mosquitto with TLS 1.3), migrations.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
DEVSTACK := $(PY) scripts/devstack
LOGS := .devstack/logs

.PHONY: help venv tools devstack migrate test demo up down status bench bench-ingest bench-sync bench-scale lint proto clean
.PHONY: bench-scaleout bench-admin

help:
	@echo "make demo          start everything locally and show it (Ctrl-C stops)"
	@echo "make prod-check    production rehearsal: compose's commands and settings on the dev stack"
	@echo "make test          run the whole test suite (starts what it needs)"
	@echo "make up|down|status  the local stack, detached (logs in $(LOGS)/)"
	@echo "make exporter-venv celery-exporter in its own virtualenv .venv-exporter (make demo does it too)"
	@echo "make bench         benchmarks -> bench/results/*.json"
	@echo "make lint          ruff, import rules (import-linter), types (mypy)"

venv: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

devstack: venv
	$(DEVSTACK) up

# promtool runs the alert-rule unit tests (OBS-03). Debian's `prometheus` package ships it; as root
# it is installed here, otherwise this says what to install (tests/ops fails without it).
tools:
	@if command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing promtool (Debian package prometheus)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; \
	else \
		echo "promtool is missing: install it (Debian/Ubuntu: sudo apt-get install --no-install-recommends prometheus;" \
			"elsewhere the promtool binary from https://prometheus.io/download/), then run make test again" >&2; \
	fi
	@# the browser tests (tests/browser) drive Debian's chromium through Playwright, which cannot download its own
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package, for the browser tests)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; \
	else \
		echo "chromium is missing: install it (Debian/Ubuntu: sudo apt-get install chromium), or set CHROMIUM" \
			"to a Chromium binary, then run make test again" >&2; \
	fi
	@# the production rehearsal (make prod-check, tests/test_prod_check.py) puts Debian's caddy in front of gunicorn
	@if command -v caddy >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing caddy (Debian package, for make prod-check)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends caddy >/dev/null \
			|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends caddy >/dev/null; }; \
	else \
		echo "caddy is missing: install it (Debian/Ubuntu: sudo apt-get install caddy), then run make prod-check again" >&2; \
	fi

migrate: devstack
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_roles >/dev/null  # the per-process roles' grants (docs/security.md)

# Stages (scripts/check): lint, import rules, types, pure unit tests, the suite against the dev stack,
# the coverage floor; a per-stage summary, artifacts of a failed run kept in .ci/artifacts/.
test: tools devstack
	$(PY) scripts/check

lint: venv
	$(PY) scripts/check --only lint imports types

proto: venv
	scripts/gen-proto

# celery-exporter pins old redis/prometheus-client: its own virtualenv, never .venv
.PHONY: exporter-venv
exporter-venv:
	$(PYTHON) scripts/exporter-venv

demo: migrate
	$(PY) scripts/demo

up: migrate
	$(PY) scripts/demo --detach

down: venv
	-$(PY) scripts/demo --stop
	$(DEVSTACK) down

status: venv
	$(DEVSTACK) status
	-$(PY) scripts/demo --status

bench: bench-ingest bench-sync bench-scale bench-admin bench-scaleout

bench-ingest: migrate
	$(PY) bench/ingest.py

bench-sync: migrate
	$(PY) bench/sync.py

# A new private stack of its own (fresh tables), the demo's processes, back-to-back 100k births.
# BASELINE=DIR also runs the same births through another checkout (e.g. a git worktree of main).
bench-scale: venv
	$(PY) bench/scale.py
	$(if $(BASELINE),$(PY) bench/scale.py --tree $(BASELINE) --result scale-baseline)

# 10^6 generated metrics in a bench database: admin pages before/after (docs/admin-scale.md),
# bulk correction and import dry-run (docs/steward-bulk.md).
bench-admin: migrate
	$(PY) bench/admin_bench.py

clean: down
	rm -rf .devstack

# 2 ingest replicas + 3 births workers vs 1 + 1 on a 200 x 5,000-metric burst; CDC takeover (docs/scaling.md)
bench-scaleout: migrate
	$(PY) bench/scaleout.py

# Production rehearsal on the dev stack: every compose service's command and settings behind a local
# HTTPS proxy, a birth to the Canary mock, health checks, admin login, the denials (docs/security.md)
.PHONY: prod-check
prod-check: tools migrate
	$(PY) scripts/prod-check
