"""Configuration: environment only, fail fast with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "DJANGO_SECRET_KEY": "x" * 50,
    "DATABASE_URL": "postgres://u:p@localhost:5432/db",  # no sslmode: verify-full
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def run_check(**overrides: str | None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "METASYNC_ENV_FILE": "/nonexistent/env", **GOOD}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    # `diffsettings` loads settings without touching the database.
    return subprocess.run([sys.executable, "manage.py", "diffsettings"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_valid_configuration_starts():
    """The baseline the failure cases below deviate from does start."""
    result = run_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u:p@h/db?sslmode=sometimes"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://u:p@h/db?sslmode=require"}, "DATABASE_URL"),  # weaker than verify-full
        ({"DATABASE_URL": "postgres://u:p@h/db?sslmode=disable"}, "DATABASE_URL"),
        ({"REDIS_URL": None}, "REDIS_URL"),
        ({"MQTT_PORT": "eighty"}, "MQTT_PORT"),
        ({"MQTT_TLS": "maybe"}, "MQTT_TLS"),
        ({"MQTT_CA_FILE": "/no/such/ca.pem"}, "MQTT_CA_FILE"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
        ({"DJANGO_SECRET_KEY": None, "DJANGO_SECRET_KEY_FILE": "/no/such/secret"}, "DJANGO_SECRET_KEY_FILE"),
    ],
)
def test_bad_configuration_fails_with_one_line_naming_the_variable(overrides, variable):
    """Configuration fail-fast: exit 2, one stderr line naming the variable, no traceback."""
    result = run_check(**overrides)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"metasync: configuration error: {variable}:")
    assert "Traceback" not in result.stderr


def test_secret_can_come_from_a_file(tmp_path):
    """SEC-03: secrets from the environment or a mounted file (<NAME>_FILE)."""
    secret = tmp_path / "secret"
    secret.write_text("f" * 40 + "\n")
    result = run_check(DJANGO_SECRET_KEY=None, DJANGO_SECRET_KEY_FILE=str(secret))
    assert result.returncode == 0, result.stderr


def test_no_secret_has_a_default():
    """SEC-03: no secret variable has a default value."""
    from metasync.env import REGISTRY

    secrets = [v for v in REGISTRY.values() if v.secret]
    assert {v.name for v in secrets} >= {"DJANGO_SECRET_KEY", "DATABASE_URL", "MQTT_PASSWORD"}
    assert [v.name for v in secrets if v.default is not None] == []


def test_weaker_database_tls_needs_an_explicit_setting():
    """SEC-04: sslmode below verify-full starts only with DATABASE_ALLOW_WEAK_TLS=true (local development)."""
    url = "postgres://u:p@localhost:5432/db?sslmode=require"
    assert run_check(DATABASE_URL=url).returncode == 2
    result = run_check(DATABASE_URL=url, DATABASE_ALLOW_WEAK_TLS="true")
    assert result.returncode == 0, result.stderr
