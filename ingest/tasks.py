"""Celery tasks of the births queue: thin callers of catalog.apply and the ledger."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from catalog import apply

log = logging.getLogger(__name__)

# A frame still `received` this long after arrival lost its task (Redis restart,
# enqueue failure after the ledger commit): beat enqueues it again.
STUCK_AFTER = timedelta(minutes=2)


@shared_task(
    queue="births", acks_late=True, ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=60,
    retry_jitter=True, max_retries=20,
)
def process_birth(frame_id: int) -> str:
    """Apply ledger frame ``frame_id`` to the catalog (idempotent: safe to run twice)."""
    outcome = apply.process_birth(frame_id)
    log.info("frame %s %s %s %s", frame_id, outcome.status, outcome.counts or "", outcome.reason[:500])
    return outcome.status


@shared_task(queue="births", acks_late=True, ignore_result=True)
def requeue_stuck_frames(limit: int = 1000) -> int:
    cutoff = timezone.now() - STUCK_AFTER
    with connection.cursor() as cur:
        cur.execute(
            "SELECT id FROM uns_meta.birth_frames WHERE status = 'received' AND received_at < %s"
            " ORDER BY id LIMIT %s", [cutoff, limit])
        ids = [row[0] for row in cur.fetchall()]
    for frame_id in ids:
        process_birth.apply_async(args=[frame_id], queue="births")
    if ids:
        log.warning("re-enqueued %d ledger frame(s) stuck in 'received'", len(ids))
    return len(ids)


@shared_task(queue="default", acks_late=True, ignore_result=True)
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
