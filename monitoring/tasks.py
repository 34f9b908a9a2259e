"""Celery tasks of monitoring: thin callers of the watchdogs."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from monitoring import watchdogs as watchdog_checks


@shared_task(name="monitoring.tasks.watchdogs", acks_late=True, ignore_result=True, time_limit=120)
def watchdogs() -> dict[str, Any]:
    """Check the alert conditions in-process; log, count and publish them (beat, every minute).

    Idempotent: a re-delivered run only checks again. Never fails on a check or on MQTT (both are
    reported as problems instead), so Flower shows it failing only when the worker itself is unwell.
    """
    return watchdog_checks.run()


# The task's name before it moved here: beat rows and queued messages of an older deployment
# still carry it. Kept for one release (docs/runbook.md, "Upgrading").
@shared_task(name="cdcsync.tasks.watchdogs", acks_late=True, ignore_result=True, time_limit=120)
def watchdogs_old_name() -> dict[str, Any]:
    return watchdog_checks.run()
