"""Celery tasks of the births queue: thin callers of the ledger's processing (ingest.processing)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import psycopg
from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone
from prometheus_client import Counter, Histogram

from ingest import processing
from metasync.db import bounded_transaction
from metasync.logging import bind

log = logging.getLogger(__name__)

# Birth apply metrics, exported by the worker (docs/metrics.md). Counted here, after the frame's
# transaction committed, so a retried task is not counted twice.
BIRTHS = Counter("metasync_births_total", "Ledger frames processed by process_birth, by outcome", ["status"])
BIRTH_ERRORS = Counter("metasync_birth_errors_total",
                       "Attempts at a frame that raised unexpectedly (retried, or the frame ended failed)", ["final"])
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


class BirthNotApplied(Exception):
    """The frame ended ``rejected`` or ``failed``: the task fails with the reason, so support staff
    see it in Flower (it is never retried: the ledger row has the final word)."""


# Connectivity problems: the frame is not to blame, Celery retries without counting an attempt.
# A statement timeout is an OperationalError too, but a frame that times out is counted and bounded.
_OUTAGES = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


def _is_outage(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, OperationalError | InterfaceError) else exc
    return isinstance(exc, _OUTAGES) and not isinstance(cause, psycopg.errors.QueryCanceled)


@shared_task(bind=True, acks_late=True, ignore_result=True, max_retries=None)
def process_birth(self: Task, frame_id: int) -> str:
    """Apply ledger frame ``frame_id`` to the catalog (idempotent: safe to run twice).

    An outage (database unreachable) is retried with backoff without limit; anything else that
    raises is recorded on the frame and retried at most BIRTH_MAX_ATTEMPTS times, then the frame
    ends ``failed`` and the task fails. A ``rejected`` or ``failed`` frame fails the task too."""
    with bind(cid=f"frame-{frame_id}", frame_id=frame_id):
        started = time.monotonic()
        try:
            outcome = processing.process_frame(frame_id)
        except Exception as exc:
            if _is_outage(exc):
                countdown = min(2 ** min(self.request.retries, 5) * 2, 60)
                log.warning("frame %s: database unavailable (%s); retrying in %ss", frame_id, exc.__class__.__name__,
                            countdown)
                raise self.retry(exc=exc, countdown=countdown) from None
            failure = processing.record_failure(frame_id, exc)
            BIRTH_ERRORS.labels("yes" if failure.final else "no").inc()
            if failure.final:
                BIRTHS.labels("failed").inc()
                log.error("frame %s failed for good after %d attempt(s): %s", frame_id, failure.attempts,
                          failure.error, exc_info=exc)
                raise BirthNotApplied(f"frame {frame_id} failed after {failure.attempts} attempt(s): "
                                      f"{failure.error}") from exc
            log.warning("frame %s: attempt %d failed (%s); retrying in %.0fs", frame_id, failure.attempts,
                        failure.error, failure.retry_in, exc_info=exc)
            raise self.retry(exc=exc, countdown=failure.retry_in) from None
        _count(outcome, time.monotonic() - started)
        log.info("frame %s %s %s %s", frame_id, outcome.status, outcome.counts or "", outcome.reason[:500])
        if outcome.status in ("rejected", "failed") and outcome.reason != "already processed":
            raise BirthNotApplied(f"frame {frame_id} {outcome.status}: {outcome.reason[:2000]}")
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
        # A frame waiting for the retry of a failed attempt is left alone until that is due.
        cur.execute(
            "SELECT id FROM uns_meta.birth_frames WHERE status = 'received' AND received_at < %s"
            " AND (retry_at IS NULL OR retry_at < now() - interval '1 minute') ORDER BY id LIMIT %s", [cutoff, limit])
        ids = [row[0] for row in cur.fetchall()]
    for frame_id in ids:
        process_birth.apply_async(args=(frame_id,))
    if ids:
        log.warning("re-enqueued %d ledger frame(s) stuck in 'received'", len(ids), extra={"frame_ids": ids})
    return len(ids)


@shared_task(acks_late=True, ignore_result=True)
def prune_ledger() -> int:
    """Delete processed frames past retention, keeping each topic's latest applied frame
    (duplicate and stale detection compare against it)."""
    cutoff = timezone.now() - timedelta(days=settings.LEDGER_RETENTION_DAYS)
    with bounded_transaction("prune", settings.BIRTH_STATEMENT_TIMEOUT_SECONDS), connection.cursor() as cur:
        cur.execute(
            "DELETE FROM uns_meta.birth_frames f WHERE f.received_at < %s AND f.status <> 'received'"
            " AND f.id NOT IN (SELECT DISTINCT ON (topic) id FROM uns_meta.birth_frames"
            "                  WHERE status = 'applied' ORDER BY topic, payload_ts DESC NULLS LAST, id DESC)",
            [cutoff])
        deleted = cur.rowcount
    log.info("pruned %d ledger frame(s) older than %s", deleted, cutoff.isoformat())
    return deleted
