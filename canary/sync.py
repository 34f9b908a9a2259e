"""Due pending metrics → diff against what Canary acknowledged → push batches (docs/cdc.md).

``flush_once`` claims due pending rows, diffs each metric's effective mapped properties against its
``SyncState`` and writes ``PushBatch`` rows in one transaction (a crash loses and duplicates
nothing); after the commit, push tasks carry the batch ids to the canary workers (:mod:`canary.push`).
Only changed keys are sent; a removed key goes as ``[name, ts, null, 32768]`` (Canary has no delete).
A metric with a batch in flight waits. Details: docs/architecture.md, "Flush and diff" and "The claim".
"""

from __future__ import annotations

import contextvars
import gc
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from django.conf import settings
from django.db import connection, transaction

from canary.breaker import circuit_open
from canary.effective import Target, effective_targets, id_array, load_mapping
from canary.models import SyncState
from canary.push import Enqueue
from cdcsync.pending import mark_now
from metasync import locks
from metasync.db import bounded_transaction
from metasync.logging import id_span

log = logging.getLogger(__name__)

GOOD_QUALITY = 192
IN_FLIGHT_RECHECK_SECONDS = 2.0  # a due metric whose last batch is still in flight is looked at again after this
REMOVED_QUALITY = 32768  # OPC "No Data": the key is no longer defined


def canary_timestamp(at: datetime | None = None) -> str:
    """ISO 8601 with zone and 7 fractional digits, as Canary documents it."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}0Z"


def diff_rows(target: Target, acked: tuple[str, dict] | None, ts: str) -> list[list]:
    """storeData rows that bring Canary from ``acked`` to ``target`` (empty: nothing to do)."""
    before = acked[1] if acked and acked[0] == target.canary_id else {}
    rows = [[name, ts, value, GOOD_QUALITY] for name, value in sorted(target.properties.items())
            if name not in before or before[name] != value or type(before[name]) is not type(value)]
    rows += [[name, ts, None, REMOVED_QUALITY] for name in sorted(before) if name not in target.properties]
    return rows


@dataclass
class BatchBuilder:
    """One storeData body under construction, kept as JSON text pieces: each tag is encoded
    once, and the batch row receives the finished text (no second serialization)."""

    max_tags: int
    max_bytes: int
    pieces: list[str] = field(default_factory=list)  # '"tag":[rows]'
    targets: list[str] = field(default_factory=list)  # '"metric id":{"canary_id":…,"properties":…}'
    metric_ids: list[int] = field(default_factory=list)
    size: int = 2

    @staticmethod
    def encode(tag: str, rows: list) -> str:
        """``tag`` is the canary id as JSON text."""
        return f"{tag}:{_dumps(rows)}"

    def fits(self, piece: str) -> bool:
        return not self.pieces or (len(self.pieces) < self.max_tags and self.size + len(piece) + 1 <= self.max_bytes)

    def add(self, target: Target, tag: str, piece: str) -> None:
        self.pieces.append(piece)
        self.size += len(piece) + 1
        self.metric_ids.append(target.metric_id)
        self.targets.append(f'"{target.metric_id}":{{"canary_id":{tag},"properties":{_dumps(target.properties)}}}')

    @property
    def body(self) -> str:
        return "{" + ",".join(self.pieces) + "}"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_dumps = _ENCODER.encode  # one encoder for every value: json.dumps(**options) builds one per call


def flush_once(enqueue: Enqueue, limit: int | None = None) -> tuple[int, list[int]]:
    """One unit of work: returns (metrics claimed, ids of batches created); the batches are
    handed to ``enqueue`` once the transaction has committed."""
    limit = limit or settings.SYNC_FLUSH_BATCH_METRICS
    with bounded_transaction("flush", settings.SYNC_STATEMENT_TIMEOUT_SECONDS, index_lookups=True):
        ids = _claim_due(limit)
        if not ids:
            return 0, []
        acked = _acked_states(ids)
        targets = effective_targets(ids, load_mapping())
        ts = canary_timestamp()
        batches: list[BatchBuilder] = []
        current = BatchBuilder(settings.CANARY_BATCH_TAGS, settings.CANARY_BATCH_MAX_BYTES)
        nothing_to_send: list[int] = []
        for mid in ids:
            target = targets.get(mid)
            if target is None or target.retired:  # gone or retired: Canary keeps what it has
                nothing_to_send.append(mid)
                continue
            rows = diff_rows(target, acked.get(mid), ts)
            if not rows:
                nothing_to_send.append(mid)
                continue
            tag = _dumps(target.canary_id)
            piece = BatchBuilder.encode(tag, rows)
            if not current.fits(piece):
                batches.append(current)
                current = BatchBuilder(settings.CANARY_BATCH_TAGS, settings.CANARY_BATCH_MAX_BYTES)
            current.add(target, tag, piece)
        if current.pieces:
            batches.append(current)
        batch_ids = _store(batches)
        _end_quarantine(nothing_to_send)
        if batch_ids:
            log.info("flush: %d metric(s) -> %d batch(es) %s", sum(len(b.metric_ids) for b in batches),
                     len(batch_ids), id_span(batch_ids), extra={"batch_ids": batch_ids})
            transaction.on_commit(lambda: enqueue(batch_ids))
    return len(ids), batch_ids


def _claim_due(limit: int) -> list[int]:
    """Take up to ``limit`` due metrics off the pending table, in due order; those with a batch
    still in flight are put off by ``IN_FLIGHT_RECHECK_SECONDS`` instead.

    Single-table statements only (docs/architecture.md, "The claim"): lock the head of the queue
    through the ``due_at`` index, look the locked ids up in ``canary_inflight`` by primary key, then
    delete or postpone them by primary key. No join is left for a bad plan to make quadratic, and
    nothing for a concurrent update to re-check; the flush's transaction prices sequential scans
    out (``index_lookups``) and the claim sorts by reading the index."""
    with connection.cursor() as cur:
        cur.execute("SELECT set_config('enable_sort', 'off', true)")  # the queue head in due_at index order
        cur.execute("SELECT metric_id FROM uns_meta.sync_pending WHERE due_at <= now()"
                    " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED", [limit])
        locked = [row[0] for row in cur.fetchall()]
        claimed: list[int] = []
        if locked:
            cur.execute("SELECT metric_id FROM uns_meta.canary_inflight WHERE metric_id = ANY(%s::bigint[])",
                        [locked])
            busy = {row[0] for row in cur.fetchall()}
            claimed = [mid for mid in locked if mid not in busy]
            if claimed:  # ::bigint[]: a bigint = ANY(int4[]) is not hashed, and would search the list per row
                cur.execute("DELETE FROM uns_meta.sync_pending WHERE metric_id = ANY(%s::bigint[])", [claimed])
            if busy:
                cur.execute("UPDATE uns_meta.sync_pending SET due_at = now() + make_interval(secs => %s)"
                            " WHERE metric_id = ANY(%s::bigint[])", [IN_FLIGHT_RECHECK_SECONDS, sorted(busy)])
        cur.execute("SELECT set_config('enable_sort', 'on', true)")
        return claimed


def preview_rows(metric_ids: list[int]) -> dict[str, list[list]]:
    """The storeData rows a flush of these metrics would send now, by tag (a dry run's preview:
    the same diff as :func:`flush_once`, nothing claimed or stored)."""
    acked = _acked_states(metric_ids)
    ts = canary_timestamp()
    out: dict[str, list[list]] = {}
    for mid, target in sorted(effective_targets(metric_ids, load_mapping()).items()):
        rows = [] if target.retired else diff_rows(target, acked.get(mid), ts)
        if rows:
            out[target.canary_id] = rows
    return out


def _acked_states(ids: list[int]) -> dict[int, tuple[str, dict]]:
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cur:  # server-side binding (see id_array)
        cur.execute("SELECT metric_id, canary_id, properties FROM uns_meta.canary_sync_state"
                    " WHERE metric_id = ANY(%s::bigint[])", [id_array(ids)])
        return {mid: (cid, props if isinstance(props, dict) else json.loads(props))
                for mid, cid, props in cur.fetchall()}


def _end_quarantine(ids: list[int]) -> None:
    """These metrics have nothing left to send: a quarantine of theirs is over (a refused change
    that was reverted since, a retired metric)."""
    if not ids:
        return
    with psycopg.Cursor(connection.connection) as cur:  # server-side binding (see id_array)
        cur.execute("DELETE FROM uns_meta.canary_quarantine WHERE metric_id = ANY(%s::bigint[])", [id_array(ids)])


def _store(batches: list[BatchBuilder]) -> list[int]:
    """Write the batches and their in-flight rows (COPY: megabytes of JSON text pass as they are)."""
    if not batches:
        return []
    with connection.cursor() as cur:
        cur.execute("SELECT nextval(pg_get_serial_sequence('uns_meta.canary_push_batches', 'id'))"
                    " FROM generate_series(1, %s)", [len(batches)])
        batch_ids = [row[0] for row in cur.fetchall()]
        with cur.copy("COPY uns_meta.canary_push_batches (id, status, attempts, tags, size, body, targets, error,"
                      " task_id) FROM STDIN") as copy:
            for batch_id, batch in zip(batch_ids, batches, strict=True):
                copy.write_row((batch_id, "queued", 0, len(batch.pieces), batch.size, batch.body,
                                "{" + ",".join(batch.targets) + "}", "", ""))
        with cur.copy("COPY uns_meta.canary_inflight (metric_id, batch_id) FROM STDIN") as copy:
            for batch_id, batch in zip(batch_ids, batches, strict=True):
                for metric_id in batch.metric_ids:
                    copy.write_row((metric_id, batch_id))
    return batch_ids


def flush_due(enqueue: Enqueue, max_seconds: float | None = None) -> dict[str, int]:
    """Flush until nothing is due or the time budget is spent (beat calls this every few seconds).

    One flush at a time (a session advisory lock): a flush that finds another running returns at
    once, so beat's ticks never pile up claimers. ``SYNC_FLUSH_THREADS`` loops run side by side,
    each on its own database connection: while one builds batches in Python the other waits for
    PostgreSQL (claims skip each other's rows).
    """
    if circuit_open():
        log.info("Canary circuit open: due changes stay pending")
        return {"claimed": 0, "batches": 0}
    connection.ensure_connection()
    if not locks.try_session_lock(connection.connection, locks.FLUSH_KEY):
        log.debug("another flush is running")
        return {"claimed": 0, "batches": 0}
    try:
        return _flush_due(enqueue, max_seconds)
    finally:
        locks.unlock(connection.connection, locks.FLUSH_KEY)


def _flush_due(enqueue: Enqueue, max_seconds: float | None) -> dict[str, int]:
    deadline = time.monotonic() + (max_seconds or settings.SYNC_FLUSH_MAX_SECONDS)
    with _collector_paused():
        if settings.SYNC_FLUSH_THREADS == 1:
            claimed, batches = _flush_until(enqueue, deadline)
        else:
            with ThreadPoolExecutor(settings.SYNC_FLUSH_THREADS, thread_name_prefix="flush") as pool:
                loops = [pool.submit(contextvars.copy_context().run, _flush_in_thread, enqueue, deadline)
                         for _ in range(settings.SYNC_FLUSH_THREADS)]
                done = [loop.result() for loop in loops]
            claimed, batches = sum(c for c, _ in done), sum(b for _, b in done)
    if claimed:
        log.info("flush: %d due metric(s) -> %d batch(es)", claimed, batches)
    return {"claimed": claimed, "batches": batches}


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A flush allocates millions of short-lived, acyclic objects (rows, dicts, strings) that
    reference counting frees; the cyclic collector would only walk them, and the process's
    long-lived objects, again and again (a tenth of the flush's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _flush_until(enqueue: Enqueue, deadline: float) -> tuple[int, int]:
    claimed = batches = 0
    while time.monotonic() < deadline:
        n, created = flush_once(enqueue)
        claimed += n
        batches += len(created)
        if n == 0:
            break
    return claimed, batches


def _flush_in_thread(enqueue: Enqueue, deadline: float) -> tuple[int, int]:
    try:
        return _flush_until(enqueue, deadline)
    finally:
        connection.close()  # this thread's own connection


def resync(metric_ids: list[int], enqueue: Enqueue) -> dict[str, int]:
    """Forget what Canary acknowledged for these metrics and flush them now: each gets its full
    mapped set (the backfill and repair path of ``resync_canary``)."""
    with transaction.atomic():
        SyncState.objects.filter(metric_id__in=metric_ids).delete()
        mark_now(metric_ids, reason="resync")
    return flush_due(enqueue)
