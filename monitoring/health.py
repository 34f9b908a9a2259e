"""Health endpoints of the web process (docs/metrics.md, "Health").

- ``/healthz``: the process is alive and serving requests. No dependency is touched, so an
  orchestrator never restarts web because the database blipped.
- ``/readyz``: the dependencies the pipeline needs are reachable: PostgreSQL (a new connection
  with the configured TLS, ``SELECT 1``), the CDC replication slot in this database, Redis
  (``PING``) and the MQTT broker (TCP, then the TLS 1.3 handshake with the configured CA and
  host name check; no MQTT login). 200 when all pass, else 503; the JSON body names each check
  with its outcome and duration. Error texts go through the log redaction: no secrets.

Checks run in parallel, each bounded by ``HEALTH_CHECK_TIMEOUT_SECONDS``. Their results are kept
for ``HEALTH_CHECK_CACHE_SECONDS``: a burst of calls opens no new connections (one run at a time).
With ``MONITORING_TOKEN`` set, ``/readyz`` names the checks only to a caller presenting it
(``Authorization: Bearer``); others get the status alone (docs/security.md).
"""

from __future__ import annotations

import hmac
import math
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field

import psycopg
import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from metasync.logging import redact
from metasync.mqtt import tls_context


@dataclass
class Result:
    ok: bool
    seconds: float = 0.0
    error: str | None = None
    detail: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if v not in (None, {})}
        out["seconds"] = round(self.seconds, 4)
        return out


class CheckFailed(Exception):
    """A dependency answered, but not as needed (the message says how)."""


def _describe(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, CheckFailed):
        text = first
    else:
        text = f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
    return redact(text)[:300]


def check_database(timeout: float) -> dict[str, object]:
    """A fresh connection (not Django's pooled one: its reuse would hide a server that is gone)."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params["application_name"] = f"{settings.METASYNC_PROCESS}-readyz"
    with psycopg.connect(**params, autocommit=True, connect_timeout=max(2, math.ceil(timeout))) as conn:
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(int(timeout * 1000)),))
        conn.execute("SELECT 1")
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s AND slot_type = 'logical'"
                           " AND database = current_database()", (settings.CDC_SLOT,)).fetchone()
    return {"slot": None if row is None else {"active": bool(row[0])}}


def check_redis(timeout: float) -> dict[str, object]:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if not client.ping():
            raise CheckFailed("PING was not answered with PONG")
    finally:
        client.close()
    return {}


def check_mqtt(timeout: float) -> dict[str, object]:
    host, port = settings.MQTT_HOST, settings.MQTT_PORT
    if not host:
        raise CheckFailed("MQTT_HOST is not set")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if not settings.MQTT_TLS:
            return {"tls": False}
        with tls_context(settings.MQTT_CA_FILE).wrap_socket(sock, server_hostname=host) as tls:
            return {"tls": tls.version()}


def _timed(check: Callable[[float], dict[str, object]], timeout: float) -> Result:
    started = time.monotonic()
    try:
        detail = check(timeout)
    except Exception as exc:  # noqa: BLE001 - every failure is a "not ready" with its reason
        return Result(False, time.monotonic() - started, _describe(exc))
    return Result(True, time.monotonic() - started, detail=detail)


def run_checks(timeout: float | None = None) -> dict[str, Result]:
    """database, replication_slot, redis, mqtt → Result; bounded by about ``timeout`` + 1 s."""
    timeout = timeout or settings.HEALTH_CHECK_TIMEOUT_SECONDS
    checks = {"database": check_database, "redis": check_redis, "mqtt": check_mqtt}
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz")
    try:
        futures = {name: pool.submit(_timed, check, timeout) for name, check in checks.items()}
        results: dict[str, Result] = {}
        deadline = time.monotonic() + timeout + 1
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[name] = Result(False, timeout, f"no answer within {timeout:g}s")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    database = results["database"]
    slot = database.detail.pop("slot", None) if database.ok else None
    if not database.ok:
        results["replication_slot"] = Result(False, error="database not reachable")
    elif slot is None:
        results["replication_slot"] = Result(False, error=f"replication slot {settings.CDC_SLOT} does not exist "
                                                          "in this database (cdc_consume creates it)")
    else:
        results["replication_slot"] = Result(True, detail={"slot": settings.CDC_SLOT, **slot})  # type: ignore[dict-item]
    return {name: results[name] for name in ("database", "replication_slot", "redis", "mqtt")}


_cache_lock = threading.Lock()
_cache: tuple[float, tuple[object, ...], dict[str, Result]] | None = None


def _cache_key() -> tuple[object, ...]:
    """What the checks talk to: a changed configuration is never answered from the cache."""
    db = settings.DATABASES["default"]
    return (db["HOST"], db["PORT"], db["NAME"], settings.REDIS_URL, settings.MQTT_HOST, settings.MQTT_PORT,
            settings.CDC_SLOT)


def cached_checks() -> dict[str, Result]:
    """:func:`run_checks`, at most once per ``HEALTH_CHECK_CACHE_SECONDS`` (callers in between wait for it)."""
    global _cache
    key = _cache_key()
    with _cache_lock:
        now = time.monotonic()
        if _cache is not None and _cache[1] == key and now - _cache[0] < settings.HEALTH_CHECK_CACHE_SECONDS:
            return _cache[2]
        results = run_checks()
        _cache = (time.monotonic(), key, results)
        return results


def has_monitoring_token(request: HttpRequest) -> bool:
    """True when no MONITORING_TOKEN is configured, or the request presents it as a bearer token."""
    token = settings.MONITORING_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "process": settings.METASYNC_PROCESS})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = cached_checks()
    failed = [name for name, result in results.items() if not result.ok]
    body: dict[str, object] = {"status": "unready" if failed else "ready"}
    if has_monitoring_token(request):
        body |= {"failed": failed, "checks": {name: result.as_dict() for name, result in results.items()}}
    return JsonResponse(body, status=503 if failed else 200)
