"""Celery tasks of the births queue: thin callers of the ledger's processing (ingest.processing)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from prometheus_client import Counter, Histogram

from ingest import processing
from metasync.logging import bind

log = logging.getLogger(__name__)

# Birth apply metrics, exported by the worker (docs/metrics.md). Counted here, after the frame's
# transaction committed, so a retried task is not counted twice.
BIRTHS = Counter("metasync_births_total", "Ledger frames processed by process_birth, by outcome", ["status"])
BIRTH_REJECTIONS = Counter("metasync_births_rejected_total", "Frames rejected, by cause (decode, topic, invalid)",
                           ["cause"])
BIRTH_METRICS = Counter("metasync_birth_metrics_total",
                        "Metrics of applied births: new, changed, unchanged, retired, restored, renamed, rejected",
                        ["outcome"])
APPLY_SECONDS = Histogram("metasync_birth_apply_seconds", "Time to apply one frame to the catalog",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
_METRIC_OUTCOMES = ("new", "changed", "unchanged", "retired", "restored", "renamed", "rejected")

# A frame still `received` this long after arrival lost its task (Redis restart,
# enqueue failure after the ledger commit): beat enqueues it again.
STUCK_AFTER = timedelta(minutes=2)


@shared_task(
    acks_late=True, ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60,
    retry_jitter=True, max_retries=20,
)
def process_birth(frame_id: int) -> str:
    """Apply ledger frame ``frame_id`` to the catalog (idempotent: safe to run twice)."""
    with bind(cid=f"frame-{frame_id}", frame_id=frame_id):
        started = time.monotonic()
        outcome = processing.process_frame(frame_id)
        _count(outcome, time.monotonic() - started)
        log.info("frame %s %s %s %s", frame_id, outcome.status, outcome.counts or "", outcome.reason[:500])
    return outcome.status


def _count(outcome: processing.Outcome, seconds: float) -> None:
    if outcome.reason == "already processed":  # a redelivery: counted when it was processed
        BIRTHS.labels("redelivered").inc()
        return
    BIRTHS.labels(outcome.status).inc()
    if outcome.status == "missing":
        return
    APPLY_SECONDS.observe(seconds)
    if outcome.cause:
        BIRTH_REJECTIONS.labels(outcome.cause).inc()
    for name in _METRIC_OUTCOMES:
        if outcome.counts.get(name):
            BIRTH_METRICS.labels(name).inc(outcome.counts[name])


@shared_task(acks_late=True, ignore_result=True)
def requeue_stuck_frames(limit: int = 1000) -> int:
    cutoff = timezone.now() - STUCK_AFTER
    with connection.cursor() as cur:
        cur.execute(
            "SELECT id FROM uns_meta.birth_frames WHERE status = 'received' AND received_at < %s"
            " ORDER BY id LIMIT %s", [cutoff, limit])
        ids = [row[0] for row in cur.fetchall()]
    for frame_id in ids:
        process_birth.apply_async(args=(frame_id,), queue="births")
    if ids:
        log.warning("re-enqueued %d ledger frame(s) stuck in 'received'", len(ids), extra={"frame_ids": ids})
    return len(ids)


@shared_task(acks_late=True, ignore_result=True)
def prune_ledger() -> int:
    """Delete processed frames past retention, keeping each topic's latest applied frame
    (duplicate and stale detection compare against it)."""
    cutoff = timezone.now() - timedelta(days=settings.LEDGER_RETENTION_DAYS)
    with connection.cursor() as cur:
        cur.execute(
            "DELETE FROM uns_meta.birth_frames f WHERE f.received_at < %s AND f.status <> 'received'"
            " AND f.id NOT IN (SELECT DISTINCT ON (topic) id FROM uns_meta.birth_frames"
            "                  WHERE status = 'applied' ORDER BY topic, payload_ts DESC NULLS LAST, id DESC)",
            [cutoff])
        deleted = cur.rowcount
    log.info("pruned %d ledger frame(s) older than %s", deleted, cutoff.isoformat())
    return deleted
