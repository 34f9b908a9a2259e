"""The production rehearsal (scripts/prod-check, docs/security.md "Production rehearsal").

One slow test runs the whole rehearsal against the dev stack and needs every row to pass; the unit
tests are its drift guard: the rehearsal must start compose's own commands and environment, with
only the documented local differences.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("prod_check", str(REPO / "scripts" / "prod-check"))
    spec = importlib.util.spec_from_loader("prod_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


prod_check = _load()
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PORTS = {
    n: 40000 + i
    for i, n in enumerate(
        ("web", "flower", "https", "flower_https", "http", "canary", "ingest", "cdc", "worker", "canary-worker")
    )
}
STACK = {
    "DATABASE_URL": "postgres://owner:pw@localhost/m?sslmode=verify-full",
    "METASYNC_APP_DATABASE_URL": "postgres://metasync_app:pw@localhost/m?sslmode=verify-full",
    "METASYNC_CDC_DATABASE_URL": "postgres://metasync_cdc:pw@localhost/m?sslmode=verify-full",
    "REDIS_URL": "redis://metasync:pw@localhost:6379/0",
    "DJANGO_ALLOWED_HOSTS": "x",
}


def _base() -> dict[str, str]:
    return prod_check.base_env(STACK, PORTS, Path("/tmp/token"))


@pytest.mark.unit
def test_rehearsal_starts_every_metasync_service_of_compose() -> None:
    """SEC-04: the rehearsal starts every long-running service of the metasync image (a new compose
    service that it does not start fails this test)."""
    ours = {
        name
        for name, svc in COMPOSE["services"].items()
        if str(svc.get("image", "")).startswith("metasync:") and name != "migrate"
    }
    assert ours == set(prod_check.SERVICES)


@pytest.mark.unit
@pytest.mark.parametrize("service", prod_check.SERVICES)
def test_rehearsal_command_is_composes(service: str) -> None:
    """SEC-04: each process runs compose's command; only the executable's path (the venv's) and the
    listen address/port differ."""
    base = _base()
    compose_argv = [prod_check.interpolate(str(a), base) for a in COMPOSE["services"][service]["command"]]
    local = prod_check.localise(service, prod_check.service_command(service, base), PORTS)
    assert Path(local[0]).name == compose_argv[0]
    allowed = {("0.0.0.0:8000", f"127.0.0.1:{PORTS['web']}"), ("--port=5555", f"--port={PORTS['flower']}")}
    extra = ["--address=127.0.0.1"] if service == "flower" else []
    assert len(local) == len(compose_argv) + len(extra)
    for theirs, mine in zip(compose_argv[1:], local[1:], strict=False):
        assert theirs == mine or (theirs, mine) in allowed, (service, theirs, mine)
    assert local[len(compose_argv) :] == extra


@pytest.mark.unit
@pytest.mark.parametrize("service", prod_check.SERVICES)
def test_rehearsal_environment_is_composes(service: str) -> None:
    """SEC-05: every variable compose sets for the service has compose's value in the rehearsal
    (roles' database URLs, proxy and HSTS settings, process name), except the documented local ones;
    and the production values of .env hold: DEBUG and devtools off, verify-full, a monitoring token."""
    base = _base()
    env = prod_check.process_env(service, base, PORTS)
    for key, value in COMPOSE["services"][service]["environment"].items():
        if key not in prod_check.LOCAL_ENV_KEYS:
            assert env[key] == prod_check.interpolate(str(value), base), (service, key)
    assert env["DJANGO_DEBUG"] == "false" and env["METASYNC_DEVTOOLS"] == "false"
    assert env["DATABASE_ALLOW_WEAK_TLS"] == "false"
    assert env["DATABASE_URL"] == STACK["METASYNC_APP_DATABASE_URL"]
    assert env["METASYNC_ENV_FILE"] == "/nonexistent"
    assert env["MONITORING_TOKEN_FILE"]
    if service == "web":
        assert env["DJANGO_BEHIND_TLS_PROXY"] == "true" and env["DJANGO_HSTS_SECONDS"] == "31536000"
        assert env["DJANGO_CSRF_TRUSTED_ORIGINS"] == f"https://localhost:{PORTS['https']}"


@pytest.mark.unit
def test_rehearsal_proxy_is_composes_caddyfile() -> None:
    """SEC-06: the local proxy is ops/caddy/Caddyfile with only addresses and certificate paths changed."""
    text = prod_check.caddyfile(PORTS)
    assert f"reverse_proxy 127.0.0.1:{PORTS['web']}" in text
    assert f"reverse_proxy 127.0.0.1:{PORTS['flower']}" in text
    assert text.count("protocols tls1.2 tls1.3") == 2
    assert 'header Strict-Transport-Security "max-age=31536000"' in text
    assert "web:8000" not in text and "/etc/caddy" not in text


@pytest.mark.slow
def test_prod_check_passes_on_the_dev_stack() -> None:
    """SEC-04, SEC-05, SEC-06: `make prod-check` passes: compose's processes with production settings
    deliver an edge's birth to the Canary mock behind a TLS proxy, every health check answers, the
    admin login works over HTTPS, and every denial holds."""
    assert shutil.which("caddy"), "caddy is missing: `make tools` installs it"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "METASYNC_ENV_FILE"))}
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prod-check")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout
    assert "DENY edge publishing another group's birth" in result.stdout
