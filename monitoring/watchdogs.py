"""Watchdogs: the conditions of ``ops/prometheus/alerts.yml`` checked in-process.

Beat runs :func:`monitoring.tasks.watchdogs` every minute. :func:`run_checks` returns one
:class:`CheckResult` per name in :data:`CHECKS`; :func:`report` logs and counts each problem and
publishes one JSON event per run, problems or not, on ``WATCHDOG_TOPIC`` (publishing never raises).
How long the circuit has been open and the slot has stood still is remembered in Redis, so runs on
different workers agree. Each check's condition and threshold: docs/metrics.md, "Watchdogs".
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pybreaker
from django.conf import settings
from django.db import connection
from prometheus_client import Counter, Gauge

from canary.breaker import breaker
from cdcsync.consumer import replication_connection
from cdcsync.slot import slot_status
from metasync.mqtt import config_from_settings, publish_once
from metasync.redis_client import redis_client
from monitoring.pipeline import pending_status

log = logging.getLogger(__name__)

CHECKS = ("ingest_silent", "decode_failures", "canary_failures", "circuit_open",
          "slot_present", "slot_retained_wal", "slot_stalled", "backlog_age")

ALERTS = Counter("metasync_watchdog_alerts_total", "Watchdog checks that found a problem, per run", ["check"])
LAST_RUN = Gauge("metasync_watchdog_last_run_timestamp_seconds", "Unix time the watchdog task last completed",
                 multiprocess_mode="max")
for _check in CHECKS:
    ALERTS.labels(_check)  # every series exists (at 0) from the start, so rate() works at once

REDIS_PREFIX = "metasync:watchdog"
CIRCUIT_KEY = f"{REDIS_PREFIX}:circuit_not_closed_since"
EVENT_TYPE = "metasync.watchdog"


def _setting(name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


@dataclass(frozen=True)
class Thresholds:
    ingest_silent_seconds: float = 3600
    decode_window_seconds: float = 900
    decode_failures: int = 3
    canary_window_seconds: float = 900
    canary_failed_batches: int = 1
    circuit_open_seconds: float = 600
    slot_retained_bytes: int = 5 * 1024**3
    slot_stalled_seconds: float = 3600
    backlog_age_seconds: float = 900 + 300

    @classmethod
    def from_settings(cls) -> Thresholds:
        return cls(
            ingest_silent_seconds=float(_setting("WATCHDOG_INGEST_SILENT_SECONDS", 3600)),
            decode_window_seconds=float(_setting("WATCHDOG_DECODE_WINDOW_SECONDS", 900)),
            decode_failures=int(_setting("WATCHDOG_DECODE_FAILURES", 3)),
            canary_window_seconds=float(_setting("WATCHDOG_CANARY_WINDOW_SECONDS", 900)),
            canary_failed_batches=int(_setting("WATCHDOG_CANARY_FAILED_BATCHES", 1)),
            circuit_open_seconds=float(_setting("WATCHDOG_CIRCUIT_OPEN_SECONDS", 600)),
            slot_retained_bytes=int(_setting("WATCHDOG_SLOT_RETAINED_BYTES", 5 * 1024**3)),
            slot_stalled_seconds=float(_setting("WATCHDOG_SLOT_STALLED_SECONDS", 3600)),
            backlog_age_seconds=float(_setting("CDC_DEBOUNCE_MAX_SECONDS", 900))
            + float(_setting("WATCHDOG_BACKLOG_MARGIN_SECONDS", 300)),
        )


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool
    value: float | None
    threshold: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _result(check: str, problem: bool, value: float | None, threshold: float | None, message: str) -> CheckResult:
    return CheckResult(check, not problem, value, threshold, message)


# --- the checks --------------------------------------------------------------------------------


def check_ingest_silent(th: Thresholds) -> CheckResult:
    with connection.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM now() - max(received_at)) FROM uns_meta.birth_frames")
        (age,) = cur.fetchone()
    if age is None:
        return _result("ingest_silent", True, None, th.ingest_silent_seconds,
                       "no frame in the birth ledger: ingest has never received one (or the ledger was pruned)")
    age = float(age)
    silent = age > th.ingest_silent_seconds
    return _result("ingest_silent", silent, round(age, 1), th.ingest_silent_seconds,
                   f"last frame received {age:.0f}s ago" + (" (ingest silent: check ingest_births, its MQTT "
                                                             "connection and topic)" if silent else ""))


def check_decode_failures(th: Thresholds) -> CheckResult:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM uns_meta.birth_frames"
                    " WHERE received_at >= now() - %s * interval '1 second' AND status = 'rejected'",
                    [th.decode_window_seconds])
        (rejected,) = cur.fetchone()
    failing = rejected >= th.decode_failures
    return _result("decode_failures", failing, rejected, th.decode_failures,
                   f"{rejected} rejected frame(s) in the last {th.decode_window_seconds:.0f}s"
                   + (" (see Ingest -> Birth frames, status rejected, for the reasons)" if failing else ""))


def check_canary_failures(th: Thresholds) -> CheckResult:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'rejected')"
                    " FROM uns_meta.canary_push_batches WHERE status IN ('failed', 'rejected')"
                    " AND updated_at >= now() - %s * interval '1 second'", [th.canary_window_seconds])
        failed, rejected = cur.fetchone()
    bad = failed + rejected
    failing = bad >= th.canary_failed_batches
    return _result("canary_failures", failing, bad, th.canary_failed_batches,
                   f"{failed} failed and {rejected} rejected push batch(es) in the last "
                   f"{th.canary_window_seconds:.0f}s" + (" (see Canary -> Push batches)" if failing else ""))


def check_circuit_open(th: Thresholds, now: float | None = None) -> CheckResult:
    now = time.time() if now is None else now
    cb = breaker()
    state = cb.current_state
    r = redis_client()
    if state == pybreaker.STATE_CLOSED:
        r.delete(CIRCUIT_KEY)
        return _result("circuit_open", False, 0, th.circuit_open_seconds, "Canary circuit closed")
    stored = r.get(CIRCUIT_KEY)
    since = float(stored) if stored else now
    opened = cb._state_storage.opened_at  # noqa: SLF001 - pybreaker's shared storage
    if opened is not None:
        since = min(since, opened.timestamp())
    r.set(CIRCUIT_KEY, since)
    duration = max(0.0, now - since)
    too_long = duration > th.circuit_open_seconds
    return _result("circuit_open", too_long, round(duration, 1), th.circuit_open_seconds,
                   f"Canary circuit {state} (not closed for {duration:.0f}s)"
                   + ("; nothing is pushed: check Canary" if too_long else ""))


def evaluate_slot(status: dict[str, Any] | None, slot: str, th: Thresholds, stalled_for: float) -> list[CheckResult]:
    """The three slot results from :func:`cdcsync.slot.slot_status` and how long it has not moved."""
    if status is None:
        return [
            _result("slot_present", True, 0, 1, f"replication slot {slot} does not exist: changes are not "
                    "captured (restart cdc_consume, then resync_canary --all)"),
            _result("slot_retained_wal", False, None, th.slot_retained_bytes, f"no slot {slot}"),
            _result("slot_stalled", False, None, th.slot_stalled_seconds, f"no slot {slot}"),
        ]
    lost = status.get("wal_status") == "lost"
    retained = status.get("retained_bytes")
    lag = status.get("lag_bytes")
    return [
        _result("slot_present", lost, 0 if lost else 1, 1,
                f"replication slot {slot} lost its WAL (max_slot_wal_keep_size): recreate it, then "
                "resync_canary --all" if lost else f"replication slot {slot} present ({status.get('wal_status')})"),
        _result("slot_retained_wal", retained is not None and retained > th.slot_retained_bytes, retained,
                th.slot_retained_bytes, f"slot {slot} retains {retained} bytes of WAL"),
        _result("slot_stalled", stalled_for > th.slot_stalled_seconds, round(stalled_for, 1), th.slot_stalled_seconds,
                f"slot {slot} confirmed {status.get('confirmed_flush_lsn')}, {lag} bytes behind, "
                f"not advanced for {stalled_for:.0f}s"),
    ]


def _stalled_for(slot: str, status: dict[str, Any] | None, now: float) -> float:
    """Seconds the slot's confirmed position has stood still while WAL waited for it (Redis memory)."""
    r = redis_client()
    key = f"{REDIS_PREFIX}:slot:{slot}"
    if status is None:
        r.delete(key)
        return 0.0
    lsn = status.get("confirmed_flush_lsn") or ""
    stored = r.hgetall(key)
    stored_lsn = stored.get(b"lsn", b"")
    if (stored_lsn.decode() if isinstance(stored_lsn, bytes) else stored_lsn) != lsn or not status.get("lag_bytes"):
        # Moved, or caught up (nothing waits): the clock starts again now.
        r.hset(key, mapping={"lsn": lsn, "since": now})
        r.expire(key, 7 * 86400)
        return 0.0
    return max(0.0, now - float(stored.get(b"since", now)))


def check_slot(th: Thresholds, now: float | None = None) -> list[CheckResult]:
    now = time.time() if now is None else now
    slot = settings.CDC_SLOT
    with replication_connection() as conn:
        status = slot_status(conn, slot)
    return evaluate_slot(status, slot, th, _stalled_for(slot, status, now))


def check_backlog_age(th: Thresholds) -> CheckResult:
    p = pending_status()
    age = p.oldest_age_seconds
    old = age > th.backlog_age_seconds
    return _result("backlog_age", old, round(age, 1), th.backlog_age_seconds,
                   f"{p.pending} metric(s) pending, {p.due} due, oldest change {age:.0f}s old"
                   + ("; due changes are not pushed: check beat, the workers and the Canary circuit" if old else ""))


def _guarded(names: Iterable[str], check: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    """Run one check; a check that cannot run (database or Redis down) is itself a problem."""
    try:
        outcome = check()
    except Exception as exc:  # noqa: BLE001 - any failure becomes a reported problem
        log.warning("watchdog check %s could not run: %s: %s", "/".join(names), exc.__class__.__name__, exc)
        text = f"check could not run: {exc.__class__.__name__}: {str(exc)[:300]}"
        return [_result(name, True, None, None, text) for name in names]
    return outcome if isinstance(outcome, list) else [outcome]


def run_checks(th: Thresholds | None = None) -> list[CheckResult]:
    th = th or Thresholds.from_settings()
    results: list[CheckResult] = []
    results += _guarded(["ingest_silent"], lambda: check_ingest_silent(th))
    results += _guarded(["decode_failures"], lambda: check_decode_failures(th))
    results += _guarded(["canary_failures"], lambda: check_canary_failures(th))
    results += _guarded(["circuit_open"], lambda: check_circuit_open(th))
    results += _guarded(["slot_present", "slot_retained_wal", "slot_stalled"], lambda: check_slot(th))
    results += _guarded(["backlog_age"], lambda: check_backlog_age(th))
    return results


# --- reporting -----------------------------------------------------------------------------------


def topic() -> str:
    return _setting("WATCHDOG_TOPIC", "") or f"metasync/watchdog/{settings.METASYNC_NODE}"


def event(results: list[CheckResult], at: datetime | None = None) -> dict[str, Any]:
    problems = [r.check for r in results if not r.ok]
    return {
        "type": EVENT_TYPE,
        "version": 1,
        "env": settings.METASYNC_ENV,
        "node": settings.METASYNC_NODE,
        "at": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "ok": not problems,
        "problems": problems,
        "checks": [r.as_dict() for r in results],
    }


def publish(payload: dict[str, Any], topic_name: str | None = None, timeout: float | None = None) -> bool:
    """Publish ``payload`` as JSON (QoS 1, not retained) on a short-lived connection; never raises."""
    topic_name = topic_name or topic()
    timeout = float(timeout or _setting("WATCHDOG_PUBLISH_TIMEOUT_SECONDS", 10))
    try:
        config = config_from_settings(
            client_id=f"metasync-watchdog-{settings.METASYNC_NODE}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        publish_once(config, topic_name, json.dumps(payload, default=str).encode(), qos=1, timeout=timeout)
        return True
    except Exception as exc:  # noqa: BLE001 - the plant side missing one event must not fail the run
        log.warning("watchdog event not published to %s: %s: %s", topic_name, exc.__class__.__name__, exc)
        return False


def report(results: list[CheckResult], *, publish_event: bool = True) -> dict[str, Any]:
    """Log and count each problem, publish the run's event; returns the event (plus ``published``)."""
    for r in results:
        if r.ok:
            continue
        ALERTS.labels(r.check).inc()
        log.warning("watchdog %s: %s (value %s, threshold %s)", r.check, r.message, r.value, r.threshold,
                    extra={"watchdog_check": r.check, "watchdog_value": r.value, "watchdog_threshold": r.threshold})
    payload = event(results)
    published = publish(payload) if publish_event else False
    LAST_RUN.set(time.time())
    if payload["ok"]:
        log.info("watchdog: all %d checks ok", len(results))
    return {**payload, "published": published}


def run() -> dict[str, Any]:
    """One watchdog run: check, log, count, publish (the beat task)."""
    return report(run_checks())
