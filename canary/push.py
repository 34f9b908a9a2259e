"""Pushing batches to Canary: claim, send concurrently, acknowledge in groups (docs/architecture.md).

A push task claims up to ``CANARY_PUSH_TASK_BATCHES`` batches in one statement, sends them from a
thread pool of its process and writes the outcomes in a few set-based transactions: acknowledged
(``Good``), split in two (a refused batch of several tags), quarantined (a refused tag alone), or
failed and pending again. A claim is fenced by the batch's ``attempts``, so a task that outlived
its lease cannot overwrite the one that took over. Outcomes, per-tag isolation and why tasks carry
many batches: docs/architecture.md, "Push and acknowledgement".
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from canary import metrics
from canary.client import CanaryClient
from canary.errors import CanaryRejected, CanaryUnavailable
from cdcsync.pending import mark_now
from metasync.db import bounded_transaction
from metasync.logging import bind, id_span

log = logging.getLogger(__name__)

SENDING_LEASE_SECONDS = 120  # > one operation's deadline: a 'sending' batch older than this was lost
ACK_EVERY_SECONDS = 0.5  # outcomes are written at least this often while a task sends
FAILED_RETRY_SECONDS = 30  # a failed batch's metrics are due again after this
SESSION_METHOD = "getSessionToken"  # a refusal of this method is about the session, not a batch's tags

Enqueue = Callable[[list[int]], None]
"""Sends push tasks for batch ids: :func:`canary.tasks.enqueue_push` (tests collect the ids)."""


@dataclass
class PushOutcome:
    acked: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)  # one-tag batches refused: their tag is quarantined
    failed: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)  # not sent before the claim's time ran out
    skipped: int = 0  # done already, or another worker holds them
    reasons: dict[int, str] = field(default_factory=dict)  # rejected/failed/split batch -> why (Canary's or ours)
    split: list[int] = field(default_factory=list)  # refused batches of several tags, now in two halves each
    children: list[int] = field(default_factory=list)  # those halves (enqueued)
    quarantined: list[str] = field(default_factory=list)  # canary ids of the tags quarantined


def _bounded(work: str = "push") -> contextlib.AbstractContextManager[None]:
    return bounded_transaction(work, settings.SYNC_STATEMENT_TIMEOUT_SECONDS, index_lookups=work == "push")


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
        if exc.method == SESSION_METHOD:  # not about this batch: splitting would quarantine every tag
            return "failed", f"Canary refused the session: {exc}"
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
            _settle(results, outcome, enqueue)
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
    with _bounded(), connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches b SET status = 'sending', attempts = b.attempts + 1"
            " WHERE b.id IN (SELECT id FROM uns_meta.canary_push_batches WHERE id = ANY(%s)"
            "   AND (status = 'queued' OR (status = 'sending' AND updated_at < now() - %s * interval '1 s'))"
            "   FOR UPDATE SKIP LOCKED)"
            " RETURNING b.id, b.attempts, b.body", [batch_ids, SENDING_LEASE_SECONDS])
        return sorted(cur.fetchall())


def _settle(results: dict[str, list[tuple[int, int, str]]], outcome: PushOutcome, enqueue: Enqueue) -> None:
    """Write the outcomes gathered so far (and forget them); halves of split batches are enqueued
    once written."""
    if results["acked"]:
        outcome.acked += acknowledge([(b, a) for b, a, _ in results["acked"]])
    if results["rejected"]:
        refused = refuse(results["rejected"])
        outcome.split += refused.split
        outcome.children += refused.children
        outcome.rejected += refused.rejected
        outcome.quarantined += refused.quarantined
        refusals = {b: w for b, _, w in results["rejected"]}
        outcome.reasons.update((b, refusals[b]) for b in refused.split + refused.rejected)
        if refused.children:
            enqueue(refused.children)
    if results["failed"]:
        done = set(give_back(results["failed"], "failed", delay=FAILED_RETRY_SECONDS))
        for batch_id, _, why in results["failed"]:
            if batch_id not in done:  # another worker's claim now: its outcome, not ours
                continue
            outcome.failed.append(batch_id)
            outcome.reasons[batch_id] = why
            log.warning("batch %s failed: %s", batch_id, why, extra={"batch_id": batch_id})
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
), released AS (  -- Canary took a quarantined metric's change: its quarantine ends
    DELETE FROM uns_meta.canary_quarantine q USING target t WHERE q.metric_id = t.metric_id
)
SELECT id, tags, NULL::float8, NULL::bigint FROM acked
UNION ALL
SELECT NULL, NULL, seconds, frame_id FROM latency
"""


def acknowledge(claims: list[tuple[int, int]]) -> list[int]:
    """Canary said Good: in one statement the batches' targets become the acknowledged state
    (and their metrics leave the quarantine). Returns the batches acknowledged (a claim another
    worker has taken over is left to it)."""
    with _bounded(), connection.cursor() as cur:
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


UNCONFIRM_SQL = """
WITH target AS (
    SELECT e.key::bigint AS metric_id, e.value ->> 'canary_id' AS canary_id, e.value -> 'properties' AS properties,
           b.id AS batch_id, jsonb_build_object('unconfirmed', b.id) AS marker
      FROM uns_meta.canary_push_batches b, jsonb_each(b.targets) AS e
     WHERE b.id = ANY(%(ids)s::bigint[])
), same_tag AS (  -- the keys the batch sent (value differs from the acknowledged one, or removed) are unconfirmed
    UPDATE uns_meta.canary_sync_state s
       SET batch_id = t.batch_id,
           properties = (SELECT coalesce(jsonb_object_agg(k, CASE WHEN (s.properties -> k)::text
                                                                       = (t.properties -> k)::text
                                                                  THEN s.properties -> k ELSE t.marker END), '{}')
                           FROM (SELECT jsonb_object_keys(s.properties) UNION SELECT jsonb_object_keys(t.properties))
                                AS keys(k))
      FROM target t
     WHERE s.metric_id = t.metric_id AND s.canary_id = t.canary_id
    RETURNING s.metric_id
)  -- never acknowledged under this tag: every key the batch sent is unconfirmed, nothing acknowledged
INSERT INTO uns_meta.canary_sync_state AS s (metric_id, canary_id, properties, acked_at, batch_id)
SELECT t.metric_id, t.canary_id, (SELECT coalesce(jsonb_object_agg(k, t.marker), '{}')
                                    FROM jsonb_object_keys(t.properties) AS k), NULL, t.batch_id
  FROM target t
 WHERE t.metric_id NOT IN (SELECT metric_id FROM same_tag)
ON CONFLICT (metric_id) DO UPDATE SET canary_id = EXCLUDED.canary_id, properties = EXCLUDED.properties,
                                      acked_at = NULL, batch_id = EXCLUDED.batch_id
"""
"""A batch that ended without ``Good`` may still have been applied (its answer lost to a timeout or
a killed worker; Canary may keep part of a refused request): the sync state must not go on saying
Canary holds the acknowledged values. The keys the batch sent become ``{"unconfirmed": batch id}``,
which equals no property value, so the next diff sends them again, or their removal
(docs/architecture.md, "Push and acknowledgement")."""


def give_back(claims: list[tuple[int, int, str]], status: str, *, delay: float) -> list[int]:
    """End batches unsuccessfully: what they sent is unconfirmed (``UNCONFIRM_SQL``), their metrics
    return to pending, due after ``delay``."""
    with _bounded(), connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches b SET status = %s, error = left(c.error, 5000)"
            " FROM unnest(%s::bigint[], %s::int[], %s::text[]) AS c(id, attempts, error)"
            " WHERE b.id = c.id AND b.attempts = c.attempts AND b.status = 'sending' RETURNING b.id",
            [status, [b for b, _, _ in claims], [a for _, a, _ in claims], [w for _, _, w in claims]])
        ended = sorted(r[0] for r in cur.fetchall())
        cur.execute(UNCONFIRM_SQL, {"ids": ended})
        cur.execute("DELETE FROM uns_meta.canary_inflight WHERE batch_id = ANY(%s) RETURNING metric_id", [ended])
        metric_ids = [r[0] for r in cur.fetchall()]
        mark_now(metric_ids, reason=f"batch {status}", delay=delay)
    if ended:
        metrics.BATCHES.labels(status).inc(len(ended))
    return ended


@dataclass
class Refused:
    split: list[int] = field(default_factory=list)  # batches of several tags, split
    children: list[int] = field(default_factory=list)  # their halves, queued
    rejected: list[int] = field(default_factory=list)  # one-tag batches: their metric is quarantined
    quarantined: list[str] = field(default_factory=list)  # canary ids of those metrics


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)  # as canary.sync writes
_dumps = _ENCODER.encode

SPLIT_SQL = """
WITH child AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(parents)s::bigint[], %(tags)s::int[], %(sizes)s::int[],
                         %(bodies)s::text[]) AS c(id, parent_id, tags, size, body)
), member AS (
    SELECT * FROM unnest(%(metric_ids)s::bigint[], %(child_ids)s::bigint[]) AS m(metric_id, child_id)
), parent AS (
    UPDATE uns_meta.canary_push_batches b SET status = 'split', error = left(p.error, 5000)
      FROM unnest(%(split)s::bigint[], %(errors)s::text[]) AS p(id, error)
     WHERE b.id = p.id AND b.status = 'sending'
    RETURNING b.id, b.targets
), born AS (
    INSERT INTO uns_meta.canary_push_batches (id, status, attempts, tags, size, body, targets, error, task_id,
                                              parent_id)
    SELECT c.id, 'queued', 0, c.tags, c.size, c.body,
           (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(p.targets) e
              JOIN member m ON m.metric_id = e.key::bigint AND m.child_id = c.id),
           '', '', c.parent_id
      FROM child c JOIN parent p ON p.id = c.parent_id
)
UPDATE uns_meta.canary_inflight i SET batch_id = m.child_id
  FROM member m JOIN child c ON c.id = m.child_id
 WHERE i.metric_id = m.metric_id AND i.batch_id = c.parent_id
"""

QUARANTINE_SQL = """
WITH ended AS (
    UPDATE uns_meta.canary_push_batches b SET status = 'rejected', error = left(c.error, 5000)
      FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS c(id, error)
     WHERE b.id = c.id AND b.status = 'sending'
    RETURNING b.id, b.targets, b.error
), target AS (
    SELECT e.key::bigint AS metric_id, e.value ->> 'canary_id' AS canary_id, x.id AS batch_id, x.error
      FROM ended x, jsonb_each(x.targets) e
), held AS (
    INSERT INTO uns_meta.canary_quarantine AS q (metric_id, canary_id, reason, batch_id, quarantined_at, attempts)
    SELECT metric_id, canary_id, error, batch_id, now(), 1 FROM target
    ON CONFLICT (metric_id) DO UPDATE SET canary_id = EXCLUDED.canary_id, reason = EXCLUDED.reason,
                                          batch_id = EXCLUDED.batch_id, quarantined_at = EXCLUDED.quarantined_at,
                                          attempts = q.attempts + 1
), gone AS (
    DELETE FROM uns_meta.canary_inflight i USING ended x WHERE i.batch_id = x.id
)
SELECT batch_id, metric_id, canary_id FROM target ORDER BY batch_id, metric_id
"""


def refuse(claims: list[tuple[int, int, str]]) -> Refused:
    """Canary refused these batches (``Errors`` or a 4xx; (id, attempts, Canary's messages)). In
    one transaction, fenced by the claims' attempts: a batch of several tags becomes two queued
    child batches carrying its halves (its in-flight rows move with their metric), and ends
    ``split``; a batch of one tag ends ``rejected`` and quarantines its metric (not pending again).
    The caller enqueues ``children``."""
    out = Refused()
    why = {b: w for b, _, w in claims}
    held: list[tuple[int, int, str]] = []  # (batch id, metric id, canary id) quarantined
    with _bounded(), connection.cursor() as cur:
        cur.execute(
            "WITH mine AS (SELECT b.id, b.body, b.targets FROM uns_meta.canary_push_batches b"
            "  JOIN unnest(%s::bigint[], %s::int[]) AS c(id, attempts) ON b.id = c.id AND b.attempts = c.attempts"
            "  WHERE b.status = 'sending' FOR UPDATE OF b)"
            " SELECT m.id, m.body, (SELECT jsonb_object_agg(e.key, e.value -> 'canary_id')"
            "                        FROM jsonb_each(m.targets) e) FROM mine m ORDER BY m.id",
            [[b for b, _, _ in claims], [a for _, a, _ in claims]])
        # the claims still current (a claim that lost its lease does nothing): id, body, metric id -> canary id
        mine = [(b, body, json.loads(tags) if isinstance(tags, str) else tags or {})  # Django reads jsonb as text
                for b, body, tags in cur.fetchall()]
        halves = {batch_id: _halves(body, tags) for batch_id, body, tags in mine if len(tags) > 1}
        single = [batch_id for batch_id, _, _ in mine if batch_id not in halves]
        if halves:
            cur.execute("SELECT nextval(pg_get_serial_sequence('uns_meta.canary_push_batches', 'id'))"
                        " FROM generate_series(1, %s)", [2 * len(halves)])
            new_ids = iter(sorted(r[0] for r in cur.fetchall()))
            rows: dict[str, list] = {k: [] for k in ("ids", "parents", "tags", "sizes", "bodies", "metric_ids",
                                                     "child_ids")}
            for parent, pair in halves.items():
                for body, n_tags, metric_ids in pair:
                    child = next(new_ids)
                    rows["ids"].append(child)
                    rows["parents"].append(parent)
                    rows["tags"].append(n_tags)
                    rows["sizes"].append(len(body))
                    rows["bodies"].append(body)
                    rows["metric_ids"] += metric_ids
                    rows["child_ids"] += [child] * len(metric_ids)
            cur.execute(SPLIT_SQL, {**rows, "split": list(halves), "errors": [why[b] for b in halves]})
            out.split, out.children = list(halves), rows["ids"]
        if single:
            cur.execute(QUARANTINE_SQL, {"ids": single, "errors": [why[b] for b in single]})
            held = cur.fetchall()
            cur.execute(UNCONFIRM_SQL, {"ids": sorted({b for b, _, _ in held})})
            out.rejected = single
            out.quarantined = [c for _, _, c in held]
    if out.split:
        metrics.BATCHES.labels("split").inc(len(out.split))
        for parent in out.split:
            log.warning("batch %s refused by Canary: split in two to isolate the refused tag(s): %s", parent,
                        why[parent], extra={"batch_id": parent})
    if out.rejected:
        metrics.BATCHES.labels("quarantined").inc(len(out.rejected))
        for batch_id, metric_id, canary_id in held:
            log.error("tag %s quarantined (metric %s): batch %s rejected by Canary: %s", canary_id, metric_id,
                      batch_id, why[batch_id], extra={"batch_id": batch_id, "metric_id": metric_id})
    return out


def _halves(body: str, tags: dict[str, str]) -> list[tuple[str, int, list[int]]]:
    """A refused batch's two halves: (storeData properties text, tags, metric ids) each. ``tags``
    is the batch's targets as metric id -> canary id; the metrics are halved in the order of the
    body (every metric goes to exactly one half, its rows with it)."""
    pieces = json.loads(body)  # canary id -> rows, in the body's order
    order = {tag: i for i, tag in enumerate(pieces)}
    metric_ids = sorted((int(m) for m in tags), key=lambda m: (order.get(tags[str(m)], len(order)), m))
    middle = (len(metric_ids) + 1) // 2
    out = []
    for part in (metric_ids[:middle], metric_ids[middle:]):
        carried = dict.fromkeys(tags[str(m)] for m in part if tags[str(m)] in pieces)
        text = "{" + ",".join(f"{_dumps(tag)}:{_dumps(pieces[tag])}" for tag in carried) + "}"
        out.append((text, len(carried), part))
    return out


def release(claims: list[tuple[int, int]]) -> list[int]:
    """Unsent batches back to ``queued`` (their claim's time ran out before a send began)."""
    with _bounded(), connection.cursor() as cur:
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
    with _bounded(), connection.cursor() as cur:
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
    """Delete batches that ended (acked, failed, rejected, split) more than ``retention_days`` ago: each
    holds a request body, and nothing reads an ended batch but the admin. Sync state keeps the
    id of the batch that last wrote it, which may then be gone."""
    with _bounded("prune"), connection.cursor() as cur:
        cur.execute("DELETE FROM uns_meta.canary_push_batches WHERE status IN ('acked', 'failed', 'rejected', 'split')"
                    " AND updated_at < now() - %s * interval '1 day'", [retention_days])
        deleted = cur.rowcount
    if deleted:
        log.info("pruned %d push batch(es) that ended more than %g day(s) ago", deleted, retention_days)
    return deleted
