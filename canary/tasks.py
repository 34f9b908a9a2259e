"""Celery tasks of the Canary stage: thin callers of canary.sync and canary.push. The only module
of the stage that knows Celery; the others receive :func:`enqueue_push` where they need it."""

from __future__ import annotations

import logging

from celery import shared_task, signals
from django.conf import settings
from django.db import InterfaceError, OperationalError

from canary import push, sync
from canary.client import CanaryClient
from canary.errors import CanaryError, CanaryRejected, CanaryUnavailable
from metasync.logging import bind

log = logging.getLogger(__name__)


SHOWN_TAGS = 10  # canary ids named in a failed task's message


@shared_task(acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), dont_autoretry_for=(CanaryError,),
             retry_backoff=True, retry_jitter=True, max_retries=10)
def push_batches(batch_ids: list[int]) -> dict[str, int]:
    """Send push batches ``batch_ids`` to Canary (idempotent: a re-send of the same rows is harmless).

    Fails visibly (Flower), once every batch is settled, when Canary stays unavailable for some of
    them (their metrics are then pending again and the next flush re-drives them) or when it
    refused tags that are now quarantined. A refused batch of several tags is split and its
    halves sent by new tasks: that alone is no failure. The raised :class:`CanaryError` is never
    retried by Celery (everything it reports is settled already).
    """
    if not batch_ids:
        return {"acked": 0, "rejected": 0, "split": 0, "requeued": 0, "skipped": 0}
    first, last = min(batch_ids), max(batch_ids)
    with bind(cid=f"batch-{first}" if first == last else f"batches-{first}-{last}"):
        outcome = push.push_batches(batch_ids, enqueue_push)
        problems = []
        if outcome.failed:
            why = outcome.reasons[outcome.failed[0]]
            log.error("%d of %d batch(es) failed (their metrics are pending again): %s", len(outcome.failed),
                      len(batch_ids), why, extra={"failed_batch_ids": outcome.failed})
            problems.append(f"{len(outcome.failed)} batch(es) failed: {why}")
        if outcome.rejected:
            tags = outcome.quarantined
            shown = ", ".join(tags[:SHOWN_TAGS]) + (f" … ({len(tags) - SHOWN_TAGS} more)" if len(tags) > SHOWN_TAGS
                                                    else "")
            problems.append(f"{len(tags)} tag(s) quarantined: {shown}: {outcome.reasons[outcome.rejected[0]]}")
        if outcome.failed:
            raise CanaryUnavailable("; ".join(problems))
        if problems:
            raise CanaryRejected(problems)
        return {"acked": len(outcome.acked), "rejected": len(outcome.rejected), "split": len(outcome.split),
                "requeued": len(outcome.requeued), "skipped": outcome.skipped}


def enqueue_push(batch_ids: list[int]) -> None:
    """Push tasks for ``batch_ids`` on the canary queue, ``CANARY_PUSH_TASK_BATCHES`` ids each."""
    push.enqueue_in_chunks(batch_ids, lambda chunk: push_batches.apply_async(args=(chunk,)))


@shared_task(acks_late=True, ignore_result=True)
def flush_due() -> dict[str, int]:
    """Due pending metrics → diffs → push batches."""
    return sync.flush_due(enqueue_push)


@shared_task(acks_late=True, ignore_result=True)
def redrive_batches() -> int:
    return push.redrive(enqueue_push)


@shared_task(acks_late=True, ignore_result=True)
def prune_batches() -> int:
    return push.prune(settings.CANARY_BATCH_RETENTION_DAYS)


@shared_task(acks_late=True, ignore_result=True)
def keepalive() -> bool:
    """keepAlive the shared session when it has been idle (sessions expire after a minute)."""
    return CanaryClient().keep_alive_if_idle()


@signals.worker_shutdown.connect
def _revoke_session(sender: object = None, **kwargs: object) -> None:
    """A canary worker that stops revokes the shared Canary session; the next caller opens a new one."""
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consumes = getattr(queues, "consume_from", None) or {}
    if "canary" not in consumes:
        return
    try:
        CanaryClient().revoke()
    except Exception:  # shutting down: never block it on Canary
        log.warning("could not revoke the Canary session at shutdown", exc_info=True)
