"""Who may talk to Redis and the broker (SEC-05), against the real dev stack (docs/security.md)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings


def _redis_address() -> tuple[str, int]:
    url = urlsplit(settings.REDIS_URL)
    assert url.hostname and url.port
    return url.hostname, url.port


def test_unauthenticated_redis_client_is_refused():
    """SEC-05: Redis refuses a client without credentials (the default user is off)."""
    host, port = _redis_address()
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="(?i)auth"):
            client.get("metasync:canary:session")
    finally:
        client.close()


def test_wrong_redis_password_is_refused():
    """SEC-05: the right user with a wrong password is refused too."""
    host, port = _redis_address()
    user = urlsplit(settings.REDIS_URL).username
    assert user, "REDIS_URL names no user"
    client = redis.Redis(host=host, port=port, username=user, password="not-the-password", socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_redis_url_of_the_settings_is_accepted():
    """SEC-05: the app's own REDIS_URL authenticates (the two denials above are for the right reason)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()
