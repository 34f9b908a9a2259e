"""The Canary circuit breaker, its state shared by every worker through Redis.

pybreaker opens after ``CANARY_BREAKER_FAIL_MAX`` consecutive failures and holds
``CANARY_BREAKER_RESET_SECONDS`` before one half-open probe. The second rule of
docs/architecture.md (≥ 2 % 5xx over one minute) is counted here in per-minute Redis
counters (the current and the previous minute are read) and opens the same
breaker. Contract errors (``Errors``) are answers, not failures: they do not count.
pybreaker holds a lock during a call, so each process/thread gets its own breaker
object over the shared storage.
"""

from __future__ import annotations

import threading
import time

import pybreaker
import redis
from django.conf import settings

from canary import metrics
from canary.errors import CanaryRejected
from metasync.redis_client import redis_client

NAMESPACE = "metasync:canary:breaker"
_STATE_VALUE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}
_local = threading.local()


class _GaugeListener(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        metrics.CIRCUIT.set(_STATE_VALUE.get(new_state.name, 0))  # type: ignore[attr-defined]


def breaker() -> pybreaker.CircuitBreaker:
    client = redis_client()
    config = (settings.REDIS_URL, settings.CANARY_BREAKER_FAIL_MAX, settings.CANARY_BREAKER_RESET_SECONDS)
    cb = getattr(_local, "breaker", None)
    if cb is None or getattr(_local, "breaker_config", None) != config:
        _local.breaker_config = config
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=NAMESPACE)
        cb = _local.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.CANARY_BREAKER_FAIL_MAX, reset_timeout=settings.CANARY_BREAKER_RESET_SECONDS,
            state_storage=storage, listeners=[_GaugeListener()], name="canary",
            exclude=[CanaryRejected])
    return cb


def circuit_open() -> bool:
    state = breaker().current_state
    metrics.CIRCUIT.set(_STATE_VALUE.get(state, 0))
    if state != pybreaker.STATE_OPEN:
        return False
    # pybreaker moves to half-open lazily, on the next call; report "open" only while holding.
    opened = breaker()._state_storage.opened_at  # noqa: SLF001 - shared storage attribute
    return opened is None or (time.time() - opened.timestamp()) < settings.CANARY_BREAKER_RESET_SECONDS


def _minute_key(minute: int) -> str:
    return f"{NAMESPACE}:m:{minute}"


def count_call(pipe: redis.client.Pipeline) -> None:
    """Queue the count of one Canary call in this minute (the 5xx-ratio rule's denominator);
    the client sends it with the call's admission, in one round trip."""
    key = _minute_key(int(time.time() // 60))
    pipe.hincrby(key, "total", 1)
    pipe.expire(key, 180)


def record_server_error() -> None:
    """Count a 5xx (or timeout, or lost connection); open the breaker when the last two minutes
    cross CANARY_BREAKER_5XX_RATIO over at least CANARY_BREAKER_MIN_REQUESTS calls."""
    r = redis_client()
    minute = int(time.time() // 60)
    pipe = r.pipeline(transaction=False)
    pipe.hincrby(_minute_key(minute), "5xx", 1)
    pipe.expire(_minute_key(minute), 180)
    pipe.hgetall(_minute_key(minute))
    pipe.hgetall(_minute_key(minute - 1))
    *_, now, before = pipe.execute()
    total = int(now.get(b"total", 0)) + int(before.get(b"total", 0))
    errors = int(now.get(b"5xx", 0)) + int(before.get(b"5xx", 0))
    if total >= settings.CANARY_BREAKER_MIN_REQUESTS and errors / total >= settings.CANARY_BREAKER_5XX_RATIO:
        cb = breaker()
        if cb.current_state == pybreaker.STATE_CLOSED:
            cb.open()
