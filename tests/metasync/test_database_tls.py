"""PostgreSQL over TLS with sslmode=verify-full (SEC-02)."""

from __future__ import annotations

import os

import psycopg
import pytest
from django.conf import settings
from django.db import connection

pytestmark = pytest.mark.django_db


def _conninfo(**overrides: str) -> str:
    db = settings.DATABASES["default"]
    params = {"host": db["HOST"], "port": str(db["PORT"]), "user": db["USER"], "password": db["PASSWORD"],
              "dbname": db["NAME"], **db["OPTIONS"], **overrides}
    params.pop("application_name", None)
    return psycopg.conninfo.make_conninfo(**params)


def test_app_connection_is_tls_with_verify_full():
    """SEC-02: the app's own connection uses TLS and verifies the server name against our CA."""
    assert settings.DATABASES["default"]["OPTIONS"]["sslmode"] == "verify-full"
    with connection.cursor() as cur:
        cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl_on, version = cur.fetchone()
    assert ssl_on is True
    assert version.startswith("TLSv1.")


def test_verify_full_with_wrong_ca_is_refused():
    """SEC-02: a server certificate not signed by the configured CA is refused."""
    wrong_ca = os.environ.get("DEVSTACK_WRONG_CA_FILE")
    assert wrong_ca, "DEVSTACK_WRONG_CA_FILE comes from the devstack env file"
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(_conninfo(sslrootcert=wrong_ca), connect_timeout=10)


def test_verify_full_with_wrong_host_name_is_refused():
    """SEC-02: verify-full checks the host name, not only the CA."""
    with pytest.raises(psycopg.OperationalError):
        # Connect to the right address, but expect a name the certificate does not carry.
        psycopg.connect(_conninfo(host="db.wrong.example", hostaddr="127.0.0.1"), connect_timeout=10)


def test_verify_full_with_right_ca_connects():
    """SEC-02: the same parameters with the right CA succeed (the two above fail for the right reason)."""
    with psycopg.connect(_conninfo(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
