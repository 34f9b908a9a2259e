"""The Redis connection of this thread (runtime state shared by every process: Canary session,
rate-limit bucket, breaker state, rebirth throttle)."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

_local = threading.local()


def redis_client() -> redis.Redis:
    """This thread's client, made again when ``REDIS_URL`` changes (tests do). Responses are
    bytes: pybreaker's Redis storage needs them."""
    cached = getattr(_local, "redis", None)
    if cached is None or cached[0] != settings.REDIS_URL:
        cached = _local.redis = (settings.REDIS_URL, redis.Redis.from_url(settings.REDIS_URL))
    return cached[1]
