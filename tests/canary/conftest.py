"""Canary tests: a real mock server on a free port and a Redis database of their own."""

from __future__ import annotations

import pytest
import redis

from canary.mock import CanaryMock, running

TOKEN = "test-api-token-not-a-secret"


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
    mock = CanaryMock(TOKEN, seed=7)
    with running(mock) as server:
        settings.CANARY_URL = f"{server.url}/api/v1"
        settings.CANARY_VIEWS_URL = f"{server.url}/api/v2"
        settings.CANARY_API_TOKEN = TOKEN
        yield mock
