"""Least-privilege roles created by `setup_roles` (SEC-03, role part)."""

from __future__ import annotations

import io
import secrets

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roles(settings):
    suffix = secrets.token_hex(4)
    app, cdc = f"t_app_{suffix}", f"t_cdc_{suffix}"
    password = secrets.token_urlsafe(16)
    settings.METASYNC_APP_DB_PASSWORD = password
    settings.METASYNC_CDC_DB_PASSWORD = password
    out = io.StringIO()
    call_command("setup_roles", app_role=app, cdc_role=cdc, stdout=out)
    yield app, cdc, password, out.getvalue()
    with psycopg.connect(settings.DATABASE_ADMIN_URL, dbname=settings.DATABASES["default"]["NAME"],
                         autocommit=True) as conn:
        for role in (app, cdc):
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def _connect(role: str, password: str) -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"], user=role, password=password,
                           sslmode="verify-full", sslrootcert=db["OPTIONS"]["sslrootcert"], autocommit=True)


def test_setup_roles_prints_grants_without_secrets(roles):
    """SEC-03: setup_roles says what it granted and never prints a password."""
    app, cdc, password, output = roles
    assert f"GRANT SELECT ON uns_meta.metrics TO {cdc}" in output
    assert f"GRANT SELECT, INSERT ON uns_meta.metric_versions TO {app}" in output
    assert f"GRANT SELECT ON uns_meta.metric_version_keys TO {app}" in output  # the key-level history view
    assert password not in output


def test_app_role_is_not_superuser_and_has_no_ddl(roles):
    """SEC-03: the application role is not superuser, can do DML, cannot do DDL."""
    app, _, password, _ = roles
    with _connect(app, password) as conn:
        assert conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles"
                            " WHERE rolname = current_user").fetchone() == (False, False, False, False)
        conn.execute("SELECT count(*) FROM uns_meta.metrics")
        conn.execute("SELECT count(*) FROM auth_user")
        conn.execute("SELECT count(*) FROM uns_meta.metric_version_keys")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE uns_meta.intruder (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE uns_meta.metrics ADD COLUMN intruder int")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE uns_meta.metric_versions SET changed_by = 'x'")


def test_cdc_role_reads_only_the_published_tables(roles):
    """SEC-03: the CDC role has REPLICATION and reads exactly the published tables."""
    _, cdc, password, _ = roles
    with _connect(cdc, password) as conn:
        assert conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (False, True)
        conn.execute("SELECT count(*) FROM uns_meta.metrics")
        conn.execute("SELECT count(*) FROM uns_meta.metric_properties")
        for table in ("uns_meta.devices", "uns_meta.metric_versions", "uns_meta.birth_frames", "auth_user"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO uns_meta.metrics (device_id) VALUES (1)")


def test_setup_roles_is_idempotent(roles):
    """Running setup_roles again updates the roles instead of failing."""
    app, cdc, _, _ = roles
    out = io.StringIO()
    call_command("setup_roles", app_role=app, cdc_role=cdc, stdout=out)
    assert f"ALTER ROLE {app}" in out.getvalue()
