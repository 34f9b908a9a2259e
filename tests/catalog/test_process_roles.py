"""One role per process kind (SEC-04): what the application role may not do to history, and the
daemons running as the application and CDC roles (docs/security.md, "Roles")."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command

from catalog.models import MetricVersion
from devtools.edge import synthetic_birth
from stack import publish, role_database_url, running_stack

pytestmark = pytest.mark.django_db(transaction=True)


def _app_connection() -> psycopg.Connection:
    return psycopg.connect(role_database_url("METASYNC_APP_DATABASE_URL"), autocommit=True)


@pytest.mark.parametrize("statement", [
    "TRUNCATE uns_meta.metric_versions",
    "ALTER TABLE uns_meta.metric_versions DISABLE TRIGGER metric_versions_append_only",
    "ALTER TABLE uns_meta.metric_versions DISABLE TRIGGER ALL",
    "ALTER TABLE uns_meta.metric_versions ADD COLUMN intruder int",
    "DROP TRIGGER metric_versions_append_only ON uns_meta.metric_versions",
    "DELETE FROM uns_meta.metric_versions",
    "UPDATE uns_meta.metric_versions SET changed_by = 'x'",
    "SET session_replication_role = replica",  # would skip the append-only trigger
])
def test_app_role_cannot_rewrite_history(statement):
    """SEC-04: the application role cannot truncate, alter, disable triggers on or delete from history."""
    with _app_connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("metasync_app",)
        conn.execute("SELECT count(*) FROM uns_meta.metric_versions")  # it may read it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        assert conn.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'metric_versions_append_only'").fetchone() == ("O",)


def test_non_tls_database_login_is_refused():
    """SEC-04: the server refuses a password login without TLS (pg_hba hostssl only), even as the owner."""
    url = urlsplit(role_database_url("METASYNC_APP_DATABASE_URL"))
    with pytest.raises(psycopg.OperationalError, match="no encryption|SSL off|pg_hba.conf"):
        psycopg.connect(host="127.0.0.1", port=url.port, dbname=settings.DATABASES["default"]["NAME"],
                        user=url.username, password=url.password, sslmode="disable", connect_timeout=5)


@pytest.mark.slow
def test_each_process_kind_runs_with_its_role(tmp_path: Path):
    """SEC-04: ingest, the workers, beat and CDC run as the application role (the slot as the CDC role)
    and a birth still goes through to the Canary mock."""
    with running_stack(tmp_path, components=("ingest", "worker", "cdc", "beat", "canary")) as stack:
        assert urlsplit(stack.env["DATABASE_URL"]).username == "metasync_app"
        assert urlsplit(stack.env["CDC_DATABASE_URL"]).username == "metasync_cdc"
        group = f"R{uuid.uuid4().hex[:8]}"
        publish(f"spBv1.0/{group}/DBIRTH/edge/dev", synthetic_birth(3, seed=7, timestamp=int(time.time() * 1000)))
        # MQTT -> ledger -> catalog (application role) ...
        stack.wait_for(lambda: MetricVersion.objects.filter(metric__device__group_id=group).count() >= 3, 60,
                       "the birth's metric versions")
        # ... -> slot (CDC role) -> pending -> flush and push (application role) -> the Canary mock
        mock = stack.canary
        assert mock is not None
        stack.wait_for(lambda: sum(group in tag for tag in mock.state()["tags"]) >= 3, 90,
                       "the birth's metrics in the Canary mock")


def test_prepare_database_migrates_then_grants_the_roles():
    """SEC-04: compose's `migrate` one-shot (`prepare_database`) leaves the roles with their grants."""
    out = io.StringIO()
    call_command("prepare_database", verbosity=0, stdout=out)
    name = settings.DATABASES["default"]["NAME"]
    assert f"roles metasync_app and metasync_cdc are set up on {name}" in out.getvalue()
    with _app_connection() as conn:
        assert conn.execute("SELECT has_table_privilege('uns_meta.metric_versions', 'INSERT'),"
                            " has_table_privilege('uns_meta.metric_versions', 'DELETE')").fetchone() == (True, False)
