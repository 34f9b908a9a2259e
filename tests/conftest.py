"""Test set-up: the suite runs against the devstack (real PostgreSQL, Redis, Mosquitto);
the only fake is our own Canary mock, a real HTTP server.

Settings read `.devstack/env` (see metasync/settings.py); `make test` starts the
devstack first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis
from django.contrib.auth.models import Group

from devtools.canary_mock import CanaryMock, running

# Test helpers (builders, brokers) are imported as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

CANARY_TOKEN = "test-api-token-not-a-secret"



@pytest.fixture(autouse=True, scope="session")
def _devtools_broker_user():
    """The tests publish births of many groups and subscribe wider than ingest's broker ACL allows
    (``spBv1.0/<group>/#``), so they and the daemons they start use the devstack's ``devtools``
    broker user; tests/metasync/test_access.py holds the ingest and edge users to their ACLs."""
    from django.conf import settings

    user, password = (os.environ.get(f"DEVSTACK_MQTT_DEVTOOLS_{k}") for k in ("USERNAME", "PASSWORD"))
    if user and password:
        # ingest's own credentials stay at hand for the ACL tests
        os.environ.setdefault("TEST_MQTT_INGEST_USERNAME", settings.MQTT_USERNAME or "")
        os.environ.setdefault("TEST_MQTT_INGEST_PASSWORD", settings.MQTT_PASSWORD or "")
        os.environ["MQTT_USERNAME"], os.environ["MQTT_PASSWORD"] = user, password
        settings.MQTT_USERNAME, settings.MQTT_PASSWORD = user, password


@pytest.fixture(autouse=True)
def _clean_uns_meta_after_transactional_tests(request):
    """Rows a transactional test committed to the catalog schema are removed after it, so no test
    sees another's (tests/cleanup.py)."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or bool(marker and marker.kwargs.get("transaction")):
        from cleanup import truncate_uns_meta

        with request.getfixturevalue("django_db_blocker").unblock():
            truncate_uns_meta()


@pytest.fixture
def canary_redis(settings):
    """Shared runtime state (session, bucket, breaker) in Redis db 14, empty for each test."""
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    settings.REDIS_URL = f"{base}/14"
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def canary(settings, canary_redis):
    """A running CanaryMock with the settings pointing at it."""
    mock = CanaryMock(CANARY_TOKEN, seed=7)
    with running(mock) as server:
        settings.CANARY_URL = f"{server.url}/api/v1"
        settings.CANARY_VIEWS_URL = f"{server.url}/api/v2"
        settings.CANARY_API_TOKEN = CANARY_TOKEN
        yield mock


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """METASYNC_TEST_DB_SUFFIX=x runs the suite on test_metasync_x: two suites side by side."""
    import os

    from django.conf import settings

    suffix = os.environ.get("METASYNC_TEST_DB_SUFFIX")
    if suffix:
        db = settings.DATABASES["default"]
        db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_{suffix}"


@pytest.fixture
def steward(client, django_user_model):
    """A member of the "Data steward" group (created by a catalog migration), logged in to the test client."""
    user = django_user_model.objects.create_user("ana", password="not-a-real-password-1", is_staff=True)
    user.groups.add(Group.objects.get(name="Data steward"))
    client.force_login(user)
    return user
