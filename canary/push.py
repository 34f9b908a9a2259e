"""Pushing batches to Canary: claim, send concurrently, acknowledge in groups (docs/architecture.md).

A push task carries the ids of up to ``CANARY_PUSH_TASK_BATCHES`` batches. It claims the
ones still to send in one statement (``queued``, or ``sending`` past the lease: a lost
task), sends them ``CANARY_PUSH_THREADS`` at a time from a thread pool of its process, and
writes the outcomes in a few set-based transactions:

- ``Good``: the batch's targets become the acknowledged sync state, its in-flight rows go and
  the end-to-end latency of the births behind it is observed;
- ``Errors`` (a 4xx): the batch is ``rejected`` with Canary's messages, its metrics pending
  again after ``CANARY_REJECTED_RETRY_SECONDS`` — never retried blindly;
- unavailable (retries exhausted, deadline, circuit open): the batch is ``failed`` and its
  metrics pending again after 30 s (beat's flush re-drives them); the task then fails, so
  Flower shows it.

Every HTTP call still takes its own slot from the global budget and goes through the shared
breaker (:mod:`canary.client`); what is shared per task is the Celery message, the claim and
the acknowledgement transaction, which is what made one task per request too slow.

A claim is fenced by the batch's ``attempts``: only the claim that is still current may
acknowledge or give a batch back. A task never starts a send once its claim could outlive the
lease (``SENDING_LEASE_SECONDS`` minus one operation's deadline): the rest goes back to
``queued`` and into a new task.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from canary import metrics
from canary.client import CanaryClient
from canary.errors import CanaryRejected, CanaryUnavailable
from cdcsync.pending import mark_now
from metasync.logging import bind, id_span

log = logging.getLogger(__name__)

SENDING_LEASE_SECONDS = 120  # > one operation's deadline: a 'sending' batch older than this was lost
ACK_EVERY_SECONDS = 0.5  # outcomes are written at least this often while a task sends
FAILED_RETRY_SECONDS = 30  # a failed batch's metrics are due again after this

Enqueue = Callable[[list[int]], None]
"""Sends push tasks for batch ids: :func:`canary.tasks.enqueue_push` (tests collect the ids)."""


@dataclass
class PushOutcome:
    acked: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)  # not sent before the claim's time ran out
    skipped: int = 0  # done already, or another worker holds them
    reasons: dict[int, str] = field(default_factory=dict)  # rejected/failed batch -> why (Canary's or ours)


# --- sending: one thread pool and one client per thread, per process -------------------------
_local = threading.local()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """This process's sender threads (kept between tasks: their HTTP connections stay open).
    A forked pool child makes its own."""
    global _pool
    size = settings.CANARY_PUSH_THREADS
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != size:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)  # the size changed: let the old threads go
            _pool = (os.getpid(), size, ThreadPoolExecutor(max_workers=size, thread_name_prefix="canary-push"))
        return _pool[2]


def _thread_client() -> CanaryClient:
    """This thread's CanaryClient (its own HTTP session and breaker), made again when the
    Canary or Redis settings change (tests do)."""
    config = (settings.CANARY_URL, settings.CANARY_API_TOKEN, settings.REDIS_URL, settings.CANARY_RATE_LIMIT_RPS)
    cached = getattr(_local, "client", None)
    if cached is None or cached[0] != config:
        cached = _local.client = (config, CanaryClient())
    return cached[1]


def _send(batch_id: int, body: str, client: CanaryClient | None, not_after: float) -> tuple[str, str]:
    """One batch's storeData operation: ("acked" | "rejected" | "failed" | "requeued", why)."""
    if time.monotonic() > not_after:
        return "requeued", ""
    try:
        with bind(batch_id=batch_id):  # the client's retry warnings name the batch
            (client or _thread_client()).store_properties(body)
    except CanaryRejected as exc:
        return "rejected", str(exc)
    except CanaryUnavailable as exc:
        return "failed", str(exc)
    except Exception as exc:  # a bug or bad configuration must not strand the batch in 'sending'
        log.exception("sending a push batch failed unexpectedly")
        return "failed", f"{exc.__class__.__name__}: {exc}"
    return "acked", ""


# --- the task's unit of work -----------------------------------------------------------------
def push_batches(batch_ids: Iterable[int], enqueue: Enqueue, client: CanaryClient | None = None) -> PushOutcome:
    """Claim, send and settle ``batch_ids``; batches left unsent go back through ``enqueue``. With
    ``client`` the sends run one after another in this thread (tests); otherwise concurrently,
    ``CANARY_PUSH_THREADS`` at a time."""
    started = time.monotonic()
    batch_ids = sorted(set(batch_ids))
    claimed = claim(batch_ids)
    outcome = PushOutcome(skipped=len(batch_ids) - len(claimed))
    if not claimed:
        return outcome
    not_after = started + SENDING_LEASE_SECONDS - settings.CANARY_OPERATION_DEADLINE_SECONDS - 10
    results: dict[str, list[tuple[int, int, str]]] = {"acked": [], "rejected": [], "failed": [], "requeued": []}
    last_write = time.monotonic()

    def settle(final: bool = False) -> None:
        nonlocal last_write
        if final or time.monotonic() - last_write >= ACK_EVERY_SECONDS:
            _settle(results, outcome)
            last_write = time.monotonic()

    if client is not None or len(claimed) == 1:
        for batch_id, attempts, body in claimed:
            status, why = _send(batch_id, body, client, not_after)
            results[status].append((batch_id, attempts, why))
            settle()
    else:
        pool = _executor()
        futures: dict[Future, tuple[int, int]] = {
            pool.submit(contextvars.copy_context().run, _send, batch_id, body, None, not_after): (batch_id, attempts)
            for batch_id, attempts, body in claimed}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, timeout=ACK_EVERY_SECONDS, return_when="FIRST_COMPLETED")
            for future in done:
                batch_id, attempts = futures[future]
                status, why = future.result()
                results[status].append((batch_id, attempts, why))
            settle()
    settle(final=True)
    if outcome.requeued:
        enqueue(outcome.requeued)
    return outcome


def claim(batch_ids: list[int]) -> list[tuple[int, int, str]]:
    """(id, attempts, body) of the given batches this call now holds."""
    if not batch_ids:
        return []
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches b SET status = 'sending', attempts = b.attempts + 1"
            " WHERE b.id IN (SELECT id FROM uns_meta.canary_push_batches WHERE id = ANY(%s)"
            "   AND (status = 'queued' OR (status = 'sending' AND updated_at < now() - %s * interval '1 s'))"
            "   FOR UPDATE SKIP LOCKED)"
            " RETURNING b.id, b.attempts, b.body", [batch_ids, SENDING_LEASE_SECONDS])
        return sorted(cur.fetchall())


def _settle(results: dict[str, list[tuple[int, int, str]]], outcome: PushOutcome) -> None:
    """Write the outcomes gathered so far (and forget them)."""
    if results["acked"]:
        outcome.acked += acknowledge([(b, a) for b, a, _ in results["acked"]])
    for status, delay in (("rejected", settings.CANARY_REJECTED_RETRY_SECONDS), ("failed", FAILED_RETRY_SECONDS)):
        if results[status]:
            done = set(give_back(results[status], status, delay=delay))
            for batch_id, _, why in results[status]:
                if batch_id not in done:  # another worker's claim now: its outcome, not ours
                    continue
                getattr(outcome, status).append(batch_id)
                outcome.reasons[batch_id] = why
                log_at = log.error if status == "rejected" else log.warning
                log_at("batch %s %s: %s", batch_id, "rejected by Canary" if status == "rejected" else "failed", why,
                       extra={"batch_id": batch_id})
    if results["requeued"]:
        outcome.requeued += release([(b, a) for b, a, _ in results["requeued"]])
    for items in results.values():
        items.clear()


ACK_SQL = """
WITH acked AS (
    UPDATE uns_meta.canary_push_batches b SET status = 'acked', error = ''
      FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS c(id, attempts)
     WHERE b.id = c.id AND b.attempts = c.attempts AND b.status = 'sending'
    RETURNING b.id, b.tags, b.targets
), target AS (
    SELECT e.key::bigint AS metric_id, e.value ->> 'canary_id' AS canary_id, e.value -> 'properties' AS properties,
           a.id AS batch_id
      FROM acked a, jsonb_each(a.targets) AS e
), latency AS (  -- birth received -> now, where the metric's latest change came from a birth newer than its last ack
    SELECT extract(epoch FROM now() - f.received_at)::float8 AS seconds, f.id AS frame_id
      FROM target t
      JOIN LATERAL (SELECT v.changed_by FROM uns_meta.metric_versions v WHERE v.metric_id = t.metric_id
                     ORDER BY v.id DESC LIMIT 1) last ON true
      JOIN uns_meta.birth_frames f
        ON f.id = CASE WHEN last.changed_by LIKE 'birth:%%' THEN substr(last.changed_by, 7)::bigint END
      LEFT JOIN uns_meta.canary_sync_state s ON s.metric_id = t.metric_id
     WHERE s.acked_at IS NULL OR f.received_at > s.acked_at
), state AS (
    INSERT INTO uns_meta.canary_sync_state AS s (metric_id, canary_id, properties, acked_at, batch_id)
    SELECT metric_id, canary_id, properties, now(), batch_id FROM target
    ON CONFLICT (metric_id) DO UPDATE SET canary_id = EXCLUDED.canary_id, properties = EXCLUDED.properties,
                                          acked_at = EXCLUDED.acked_at, batch_id = EXCLUDED.batch_id
), gone AS (
    DELETE FROM uns_meta.canary_inflight i USING acked a WHERE i.batch_id = a.id
)
SELECT id, tags, NULL::float8, NULL::bigint FROM acked
UNION ALL
SELECT NULL, NULL, seconds, frame_id FROM latency
"""


def acknowledge(claims: list[tuple[int, int]]) -> list[int]:
    """Canary said Good: in one statement the batches' targets become the acknowledged state.
    Returns the batches acknowledged (a claim another worker has taken over is left to it)."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(ACK_SQL, {"ids": [b for b, _ in claims], "attempts": [a for _, a in claims]})
        rows = cur.fetchall()
    acked = sorted(r[0] for r in rows if r[0] is not None)
    tags = sum(r[1] for r in rows if r[0] is not None)
    frames = sorted({r[3] for r in rows if r[0] is None})
    for row in rows:
        if row[0] is None:
            metrics.END_TO_END.observe(row[2])
    if acked:
        metrics.BATCHES.labels("acked").inc(len(acked))
        metrics.TAGS_PUSHED.inc(tags)
        log.info("%d batch(es) acknowledged (%s): %d tag(s), changes of %d birth frame(s)", len(acked),
                 id_span(acked), tags, len(frames),
                 extra={"batch_ids": acked, "frame_ids": frames})
    return acked


def give_back(claims: list[tuple[int, int, str]], status: str, *, delay: float) -> list[int]:
    """End batches unsuccessfully: their metrics return to pending, due after ``delay``."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches b SET status = %s, error = left(c.error, 5000)"
            " FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS c(id, attempts, error)"
            " WHERE b.id = c.id AND b.attempts = c.attempts AND b.status = 'sending' RETURNING b.id",
            [status, [b for b, _, _ in claims], [a for _, a, _ in claims], [w for _, _, w in claims]])
        ended = sorted(r[0] for r in cur.fetchall())
        cur.execute("DELETE FROM uns_meta.canary_inflight WHERE batch_id = ANY(%s) RETURNING metric_id", [ended])
        metric_ids = [r[0] for r in cur.fetchall()]
        mark_now(metric_ids, reason=f"batch {status}", delay=delay)
    if ended:
        metrics.BATCHES.labels(status).inc(len(ended))
    return ended


def release(claims: list[tuple[int, int]]) -> list[int]:
    """Unsent batches back to ``queued`` (their claim's time ran out before a send began)."""
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches b SET status = 'queued', attempts = b.attempts - 1"
            " FROM unnest(%s::bigint[], %s::int[]) AS c(id, attempts)"
            " WHERE b.id = c.id AND b.attempts = c.attempts AND b.status = 'sending' RETURNING b.id",
            [[b for b, _ in claims], [a for _, a in claims]])
        return sorted(r[0] for r in cur.fetchall())


# --- enqueueing and re-driving ---------------------------------------------------------------
def enqueue_in_chunks(batch_ids: list[int], send: Callable[[list[int]], object]) -> None:
    """Call ``send`` for ``CANARY_PUSH_TASK_BATCHES`` ids at a time. A failure to send (broker
    down) is logged: those batches stay queued and :func:`redrive` sends them later."""
    size = settings.CANARY_PUSH_TASK_BATCHES
    for i in range(0, len(batch_ids), size):
        chunk = batch_ids[i:i + size]
        try:
            send(chunk)
        except Exception:
            log.exception("could not enqueue push_batches(%s)", id_span(chunk))


def redrive(enqueue: Enqueue, older_than_seconds: float = 60) -> int:
    """Re-enqueue batches whose task was lost (still queued, or sending past the lease)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT id FROM uns_meta.canary_push_batches WHERE (status = 'queued' AND updated_at < now() - %s"
            " * interval '1 s') OR (status = 'sending' AND updated_at < now() - %s * interval '1 s') ORDER BY id"
            " LIMIT 5000", [older_than_seconds, SENDING_LEASE_SECONDS])
        ids = [r[0] for r in cur.fetchall()]
    if ids:
        log.warning("re-driving %d push batch(es) whose task was lost", len(ids))
        enqueue(ids)
    return len(ids)


def prune(retention_days: float) -> int:
    """Delete batches that ended (acked, failed, rejected) more than ``retention_days`` ago: each
    holds a request body, and nothing reads an ended batch but the admin. Sync state keeps the
    id of the batch that last wrote it, which may then be gone."""
    with connection.cursor() as cur:
        cur.execute("DELETE FROM uns_meta.canary_push_batches WHERE status IN ('acked', 'failed', 'rejected')"
                    " AND updated_at < now() - %s * interval '1 day'", [retention_days])
        deleted = cur.rowcount
    if deleted:
        log.info("pruned %d push batch(es) that ended more than %g day(s) ago", deleted, retention_days)
    return deleted
