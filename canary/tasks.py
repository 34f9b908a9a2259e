"""Celery tasks of the Canary stage: thin callers of canary.sync and the client."""

from __future__ import annotations

import logging

from celery import shared_task, signals
from django.db import InterfaceError, OperationalError

from canary import sync
from canary.errors import CanaryUnavailable
from metasync.logging import bind

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=True, retry_jitter=True, max_retries=10)
def push_batch(batch_id: int) -> str:
    """Send push batch ``batch_id`` to Canary (idempotent: a re-send of the same rows is harmless).

    Fails visibly (Flower) when Canary stays unavailable; its metrics are then pending again.
    """
    with bind(cid=f"batch-{batch_id}", batch_id=batch_id):
        try:
            return sync.push(batch_id)
        except CanaryUnavailable as exc:
            log.error("batch %s failed: %s (its metrics are pending again)", batch_id, exc)
            raise


@shared_task(acks_late=True, ignore_result=True)
def flush_due() -> dict[str, int]:
    """Due pending metrics → diffs → push batches."""
    return sync.flush_due()


@shared_task(acks_late=True, ignore_result=True)
def redrive_batches() -> int:
    return sync.redrive()


@shared_task(acks_late=True, ignore_result=True)
def keepalive() -> bool:
    """keepAlive the shared session when it has been idle (sessions expire after a minute)."""
    from canary.client import CanaryClient

    return CanaryClient().keep_alive_if_idle()


@signals.worker_shutdown.connect
def _revoke_session(sender: object = None, **kwargs: object) -> None:
    """A canary worker that stops revokes the shared Canary session (CANARY_API.md); the next
    caller opens a new one."""
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consumes = getattr(queues, "consume_from", None) or {}
    if "canary" not in consumes:
        return
    try:
        from canary.client import CanaryClient

        CanaryClient().revoke()
    except Exception:  # shutting down: never block it on Canary
        log.warning("could not revoke the Canary session at shutdown", exc_info=True)
