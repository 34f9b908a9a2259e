"""Celery tasks of the CDC stage: thin callers of domain modules."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from cdcsync import watchdogs as watchdog_checks


@shared_task(name="cdcsync.tasks.watchdogs", acks_late=True, ignore_result=True, time_limit=120)
def watchdogs() -> dict[str, Any]:
    """Check the alert conditions in-process; log, count and publish them (beat, every minute).

    Idempotent: a re-delivered run only checks again. Never fails on a check or on MQTT (both are
    reported as problems instead), so Flower shows it failing only when the worker itself is unwell.
    """
    return watchdog_checks.run()
