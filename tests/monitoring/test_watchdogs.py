"""Watchdogs: each check fires on a bad state and clears on a good one, problems are
logged and counted, and the run's JSON event arrives on the real broker (MQTT, QoS 1).

The same conditions as the alert rules (OBS-03, tests/ops/test_alert_rules.py), read from
PostgreSQL, the replication slot and Redis instead of Prometheus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client import REGISTRY

from canary.breaker import NAMESPACE, breaker
from canary.models import PushBatch
from cdcsync.consumer import replication_connection
from cdcsync.models import PendingSync
from cdcsync.slot import advance, ensure_slot, flush_lsn
from ingest.models import BirthFrame
from metasync.mqtt import config_from_settings, make_client
from monitoring import watchdogs
from monitoring.watchdogs import Thresholds, check_slot

TH = Thresholds()  # the defaults: 1 h silence, 3 rejected / 15 min, 1 failed batch / 15 min, 10 min open, ...


def by_name(results: list[watchdogs.CheckResult]) -> dict[str, watchdogs.CheckResult]:
    return {r.check: r for r in results}


def frame(ago: timedelta, status: str = BirthFrame.Status.APPLIED) -> BirthFrame:
    payload = uuid.uuid4().bytes
    return BirthFrame.objects.create(topic="spBv1.0/Secil/DBIRTH/Portugal/Cement", payload=payload, size=16,
                                     sha256=hashlib.sha256(payload).digest(), status=status,
                                     received_at=timezone.now() - ago)


def batch(status: str, ago: timedelta = timedelta(0)) -> PushBatch:
    when = timezone.now() - ago
    return PushBatch.objects.create(status=status, tags=1, size=10, body="{}", targets={},
                                    created_at=when, updated_at=when)


def alerts_counted(check: str) -> float:
    return REGISTRY.get_sample_value("metasync_watchdog_alerts_total", {"check": check}) or 0.0


@contextmanager
def subscribed(topic: str) -> Iterator[queue.Queue]:
    """A paho subscriber on the devstack broker; yields once the broker confirmed the subscription."""
    received: queue.Queue = queue.Queue()
    client = make_client(config_from_settings(client_id=f"test-watchdog-{uuid.uuid4().hex[:8]}"))
    client.on_message = lambda c, u, msg: received.put(msg)
    client.on_subscribe = lambda *a: received.put("subscribed")
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect(settings.MQTT_HOST, settings.MQTT_PORT)
    client.loop_start()
    try:
        assert received.get(timeout=10) == "subscribed"
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


def next_event(received: queue.Queue, timeout: float = 15.0) -> tuple[str, dict]:
    msg = received.get(timeout=timeout)  # waits for the message, up to the deadline
    return msg.topic, json.loads(msg.payload)


# --- each check fires and clears ------------------------------------------------------------------


@pytest.mark.django_db
def test_ingest_silent_fires_on_an_old_or_empty_ledger_and_clears_with_a_new_frame():
    BirthFrame.objects.all().delete()
    empty = watchdogs.check_ingest_silent(TH)
    assert not empty.ok and "no frame" in empty.message

    frame(timedelta(hours=2))
    old = watchdogs.check_ingest_silent(TH)
    assert not old.ok and old.value > 7000 and old.threshold == 3600

    frame(timedelta(minutes=1))
    fresh = watchdogs.check_ingest_silent(TH)
    assert fresh.ok and fresh.value < 3600


@pytest.mark.django_db
def test_decode_failures_fire_on_rejected_frames_in_the_window_and_clear_when_it_passes():
    for _ in range(5):
        frame(timedelta(hours=2), BirthFrame.Status.REJECTED)  # outside the 15-minute window
    frame(timedelta(minutes=1), BirthFrame.Status.APPLIED)
    assert watchdogs.check_decode_failures(TH).ok

    recent = [frame(timedelta(minutes=m), BirthFrame.Status.REJECTED) for m in (1, 2)]
    two = watchdogs.check_decode_failures(TH)
    assert two.ok and two.value == 2

    recent.append(frame(timedelta(minutes=3), BirthFrame.Status.REJECTED))
    three = watchdogs.check_decode_failures(TH)
    assert not three.ok and three.value == 3 and three.threshold == 3

    BirthFrame.objects.filter(pk__in=[f.pk for f in recent]).update(received_at=timezone.now() - timedelta(hours=1))
    assert watchdogs.check_decode_failures(TH).ok


@pytest.mark.django_db
def test_canary_failures_fire_on_failed_or_rejected_batches_and_clear_once_acked():
    batch(PushBatch.Status.ACKED)
    batch(PushBatch.Status.FAILED, ago=timedelta(hours=2))  # long ago
    assert watchdogs.check_canary_failures(TH).ok

    rejected = batch(PushBatch.Status.REJECTED)
    result = watchdogs.check_canary_failures(TH)
    assert not result.ok and result.value == 1 and "1 rejected" in result.message

    PushBatch.objects.filter(pk=rejected.pk).update(status=PushBatch.Status.ACKED)  # retried later, Good
    assert watchdogs.check_canary_failures(TH).ok


def test_circuit_open_fires_after_the_threshold_even_across_failed_probes(canary_redis):
    assert watchdogs.check_circuit_open(TH).ok

    breaker().open()
    just_opened = watchdogs.check_circuit_open(TH)
    assert just_opened.ok and just_opened.value < 5  # open, but not for long

    # Opened 11 minutes ago (pybreaker only moves opened_at forward: set its Redis key directly).
    canary_redis.set(breaker()._state_storage._namespace("opened_at"), int(time.time()) - 660)  # noqa: SLF001
    canary_redis.delete(watchdogs.CIRCUIT_KEY)
    long_open = watchdogs.check_circuit_open(TH)
    assert not long_open.ok and long_open.value >= 660 and "open" in long_open.message

    # A failing half-open probe re-opens it with a fresh opened_at: still not closed since then.
    breaker().half_open()
    breaker().open()
    assert breaker()._state_storage.opened_at.timestamp() > time.time() - 5  # noqa: SLF001
    still = watchdogs.check_circuit_open(TH)
    assert not still.ok and still.value >= 660

    breaker().close()
    closed = watchdogs.check_circuit_open(TH)
    assert closed.ok and closed.value == 0
    assert canary_redis.get(watchdogs.CIRCUIT_KEY) is None
    assert any(k.startswith(NAMESPACE.encode()) for k in canary_redis.keys())  # the breaker's own state


@pytest.mark.django_db
def test_slot_missing_fires_for_a_slot_that_does_not_exist(settings, canary_redis):
    settings.CDC_SLOT = f"t_missing_{uuid.uuid4().hex[:10]}"
    results = by_name(check_slot(TH))
    assert not results["slot_present"].ok and settings.CDC_SLOT in results["slot_present"].message
    assert results["slot_retained_wal"].ok and results["slot_stalled"].ok


@pytest.fixture
def slot(settings, canary_redis) -> Iterator[str]:
    """A fresh logical slot of this test, as CDC_SLOT (nobody consumes it)."""
    name = f"t_wd_{uuid.uuid4().hex[:10]}"
    with replication_connection() as conn:
        ensure_slot(conn, name)
        settings.CDC_SLOT = name
        try:
            yield name
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def emit_wal() -> None:
    with replication_connection() as conn:  # autocommit: the commit flushes the WAL
        conn.execute("SELECT pg_logical_emit_message(true, 'metasync-test', 'watchdog')")


@pytest.mark.django_db(transaction=True)
def test_slot_checks_clear_for_a_healthy_slot_and_fire_on_retained_wal_and_a_stall(slot, settings):
    t0 = time.time()
    healthy = by_name(check_slot(TH, now=t0))
    assert all(r.ok for r in healthy.values()), healthy

    emit_wal()  # WAL now waits for the slot, which nobody advances
    retained = by_name(check_slot(Thresholds(slot_retained_bytes=0), now=t0))
    assert not retained["slot_retained_wal"].ok and retained["slot_retained_wal"].value > 0
    assert by_name(check_slot(TH, now=t0))["slot_retained_wal"].ok  # far below 5 GiB

    stalled = by_name(check_slot(TH, now=t0 + 3601))
    assert not stalled["slot_stalled"].ok and stalled["slot_stalled"].value >= 3600
    assert stalled["slot_present"].ok

    with replication_connection() as conn:  # the consumer moves on
        advance(conn, slot, flush_lsn(conn))
    moved = by_name(check_slot(TH, now=t0 + 3700))
    assert moved["slot_stalled"].ok and moved["slot_stalled"].value == 0


def test_a_slot_whose_wal_was_lost_is_a_problem():
    status = {"wal_status": "lost", "retained_bytes": None, "lag_bytes": None, "confirmed_flush_lsn": "0/10"}
    results = by_name(watchdogs.evaluate_slot(status, "uns_meta_slot", TH, 0))
    assert not results["slot_present"].ok and "lost" in results["slot_present"].message


@pytest.mark.django_db
def test_backlog_age_fires_past_the_debounce_cap_plus_margin_and_clears_when_pushed(settings):
    settings.CDC_DEBOUNCE_MAX_SECONDS = 900
    th = Thresholds.from_settings()
    assert th.backlog_age_seconds == 1200
    PendingSync.objects.all().delete()
    now = timezone.now()
    PendingSync.objects.create(metric_id=10**12 + 1, first_change_at=now - timedelta(minutes=5),
                               last_change_at=now, due_at=now + timedelta(minutes=3))
    assert watchdogs.check_backlog_age(th).ok

    PendingSync.objects.create(metric_id=10**12 + 2, first_change_at=now - timedelta(minutes=30),
                               last_change_at=now - timedelta(minutes=29), due_at=now - timedelta(minutes=26))
    old = watchdogs.check_backlog_age(th)
    assert not old.ok and old.value >= 1800 and "2 metric(s) pending" in old.message

    PendingSync.objects.filter(metric_id=10**12 + 2).delete()  # pushed
    assert watchdogs.check_backlog_age(th).ok


# --- one run: log, count, publish --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_logs_counts_and_publishes_its_problems_on_mqtt(settings, canary_redis, caplog):
    from monitoring.tasks import watchdogs as watchdog_task

    settings.WATCHDOG_TOPIC = f"metasync/watchdog/test-{uuid.uuid4().hex[:8]}"
    settings.CDC_SLOT = f"t_missing_{uuid.uuid4().hex[:10]}"
    batch(PushBatch.Status.FAILED)
    before = {c: alerts_counted(c) for c in watchdogs.CHECKS}

    with subscribed(settings.WATCHDOG_TOPIC) as received, caplog.at_level(logging.WARNING, "monitoring.watchdogs"):
        summary = watchdog_task()  # the beat task, run in this process
        topic, event = next_event(received)

    assert topic == settings.WATCHDOG_TOPIC and summary["published"] is True
    assert event["type"] == "metasync.watchdog" and event["node"] == settings.METASYNC_NODE
    assert event["ok"] is False and {"slot_present", "canary_failures"} <= set(event["problems"])
    assert [c["check"] for c in event["checks"]] == list(watchdogs.CHECKS)
    slot_present = next(c for c in event["checks"] if c["check"] == "slot_present")
    assert slot_present["ok"] is False and settings.CDC_SLOT in slot_present["message"]

    for check in event["problems"]:
        assert alerts_counted(check) == before[check] + 1, check
        assert any(r.levelno == logging.WARNING and f"watchdog {check}:" in r.getMessage() for r in caplog.records)
    for check in set(watchdogs.CHECKS) - set(event["problems"]):
        assert alerts_counted(check) == before[check], check
    assert REGISTRY.get_sample_value("metasync_watchdog_last_run_timestamp_seconds") > time.time() - 60


@pytest.mark.django_db
def test_default_topic_is_per_node(settings):
    settings.WATCHDOG_TOPIC = None
    assert watchdogs.topic() == f"metasync/watchdog/{settings.METASYNC_NODE}"


def test_an_unreachable_broker_is_logged_never_raised(settings, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        settings.MQTT_PORT = s.getsockname()[1]
    results = [watchdogs.CheckResult("backlog_age", False, 9999.0, 1200.0, "oldest change 9999s old")]
    before = alerts_counted("backlog_age")
    with caplog.at_level(logging.WARNING, "monitoring.watchdogs"):
        summary = watchdogs.report(results)
    assert summary["published"] is False and summary["problems"] == ["backlog_age"]
    assert alerts_counted("backlog_age") == before + 1
    assert any("watchdog event not published" in r.getMessage() for r in caplog.records)


def test_a_check_that_cannot_run_is_reported_as_a_problem(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    (result,) = watchdogs._guarded(["circuit_open"], lambda: watchdogs.check_circuit_open(TH))  # noqa: SLF001
    assert not result.ok and result.message.startswith("check could not run")


def test_the_beat_task_is_registered_on_the_default_queue():
    import monitoring.tasks  # noqa: F401 - registers the task, as the worker's autodiscovery does
    from metasync.celery import app

    task = app.tasks["monitoring.tasks.watchdogs"]
    assert (task.acks_late, task.ignore_result) == (True, True)
    assert app.amqp.router.route({}, task.name)["queue"].name == "default"
    assert settings.CELERY_BEAT_SCHEDULE["watchdogs"]["task"] == task.name


def test_the_task_keeps_its_old_name_for_queued_messages_and_beat_rows():
    """A deployment upgraded in place may still hold `cdcsync.tasks.watchdogs` messages and beat
    rows: that name stays registered, on the same queue, running the same checks."""
    import monitoring.tasks  # noqa: F401 - registers the tasks, as the worker's autodiscovery does
    from metasync.celery import app

    old, new = app.tasks["cdcsync.tasks.watchdogs"], app.tasks["monitoring.tasks.watchdogs"]
    assert app.amqp.router.route({}, old.name)["queue"].name == "default"
    assert (old.acks_late, old.ignore_result, old.time_limit) == (new.acks_late, new.ignore_result, new.time_limit)
    assert old.run.__code__.co_names == new.run.__code__.co_names  # both call watchdog_checks.run
