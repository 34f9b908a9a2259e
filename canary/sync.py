"""Due pending metrics → diff against what Canary acknowledged → push batches (SYSTEM.md §7-8).

``flush_once`` claims due pending rows, diffs each metric's effective mapped
properties against its ``SyncState`` and writes ``PushBatch`` rows — all in one
transaction, so a crash loses nothing and duplicates nothing. Only changed keys
are sent; a key that disappeared is sent as ``[name, ts, null, 32768]`` (value
null, quality "No Data"): Canary keeps property history and has no delete, so
"no longer defined" is recorded as a null value from that time on (the mock
hides such keys in ``getTagProperties``). A new ``canary_id`` (rename) gets the
full set. A metric with a batch in flight waits (one unacknowledged batch per
metric keeps acknowledgements in order).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from django.conf import settings
from django.db import connection, transaction

from canary.effective import Target, effective_targets, load_mapping

log = logging.getLogger(__name__)

GOOD_QUALITY = 192
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
    def encode(target: Target, rows: list) -> str:
        return f"{_dumps(target.canary_id)}:{_dumps(rows)}"

    def fits(self, piece: str) -> bool:
        return not self.pieces or (len(self.pieces) < self.max_tags and self.size + len(piece) + 1 <= self.max_bytes)

    def add(self, target: Target, piece: str) -> None:
        self.pieces.append(piece)
        self.size += len(piece) + 1
        self.metric_ids.append(target.metric_id)
        self.targets.append(f'"{target.metric_id}":' + _dumps(
            {"canary_id": target.canary_id, "properties": target.properties}))

    @property
    def body(self) -> str:
        return "{" + ",".join(self.pieces) + "}"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def flush_once(limit: int | None = None) -> tuple[int, list[int]]:
    """One unit of work: returns (metrics claimed, ids of batches created)."""
    limit = limit or settings.SYNC_FLUSH_BATCH_METRICS
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(
                "DELETE FROM uns_meta.sync_pending WHERE metric_id IN ("
                "  SELECT p.metric_id FROM uns_meta.sync_pending p"
                "  WHERE p.due_at <= now() AND NOT EXISTS"
                "    (SELECT 1 FROM uns_meta.canary_inflight f WHERE f.metric_id = p.metric_id)"
                "  ORDER BY p.due_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING metric_id", [limit])
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                return 0, []
            cur.execute("SELECT metric_id, canary_id, properties FROM uns_meta.canary_sync_state"
                        " WHERE metric_id = ANY(%s)", [ids])
            acked = {mid: (cid, props if isinstance(props, dict) else json.loads(props))
                     for mid, cid, props in cur.fetchall()}
        targets = effective_targets(ids, load_mapping())
        ts = canary_timestamp()
        batches: list[BatchBuilder] = []
        current = BatchBuilder(settings.CANARY_BATCH_TAGS, settings.CANARY_BATCH_MAX_BYTES)
        for mid in ids:
            target = targets.get(mid)
            if target is None or target.retired:  # gone or retired: Canary keeps what it has
                continue
            rows = diff_rows(target, acked.get(mid), ts)
            if not rows:
                continue
            piece = BatchBuilder.encode(target, rows)
            if not current.fits(piece):
                batches.append(current)
                current = BatchBuilder(settings.CANARY_BATCH_TAGS, settings.CANARY_BATCH_MAX_BYTES)
            current.add(target, piece)
        if current.pieces:
            batches.append(current)
        batch_ids: list[int] = []
        if batches:
            with connection.cursor() as cur:
                cur.execute("SELECT nextval(pg_get_serial_sequence('uns_meta.canary_push_batches', 'id'))"
                            " FROM generate_series(1, %s)", [len(batches)])
                batch_ids = [row[0] for row in cur.fetchall()]
            # Server-side binding, binary arrays: megabytes of JSON text are sent as they are, not
            # escaped into the SQL string (the client-side cursor's default).
            with psycopg.Cursor(connection.connection) as raw:
                raw.execute(
                    "INSERT INTO uns_meta.canary_push_batches (id, status, attempts, tags, size, body, targets,"
                    " error, task_id) SELECT t.id, 'queued', 0, t.tags, t.size, t.body::jsonb, t.targets::jsonb,"
                    " '', '' FROM unnest(%b::bigint[], %b::int[], %b::int[], %b::text[], %b::text[])"
                    " AS t(id, tags, size, body, targets)",
                    [batch_ids, [len(b.pieces) for b in batches], [b.size for b in batches],
                     [b.body for b in batches], ["{" + ",".join(b.targets) + "}" for b in batches]])
            with connection.cursor() as cur:
                cur.execute(
                    "INSERT INTO uns_meta.canary_inflight (metric_id, batch_id)"
                    " SELECT unnest(%s::bigint[]), unnest(%s::bigint[])",
                    [[m for b in batches for m in b.metric_ids],
                     [bid for b, bid in zip(batches, batch_ids, strict=True) for _ in b.metric_ids]])
            log.info("flush: %d metric(s) -> batch(es) %s", sum(len(b.metric_ids) for b in batches),
                     ", ".join(map(str, batch_ids)), extra={"batch_ids": batch_ids})
            transaction.on_commit(lambda: _enqueue(batch_ids))
    return len(ids), batch_ids


def _enqueue(batch_ids: list[int]) -> None:
    from canary.tasks import push_batch

    for batch_id in batch_ids:
        try:
            push_batch.apply_async(args=[batch_id], queue="canary")
        except Exception:  # broker down: the batch stays queued and beat re-drives it
            log.exception("could not enqueue push_batch(%s)", batch_id)


def flush_due(max_seconds: float | None = None) -> dict[str, int]:
    """Flush until nothing is due or the time budget is spent (beat calls this every few seconds)."""
    from canary.breaker import circuit_open

    if circuit_open():
        log.info("Canary circuit open: due changes stay pending")
        return {"claimed": 0, "batches": 0}
    deadline = time.monotonic() + (max_seconds or settings.SYNC_FLUSH_MAX_SECONDS)
    claimed = batches = 0
    while time.monotonic() < deadline:
        n, created = flush_once()
        claimed += n
        batches += len(created)
        if n == 0:
            break
    if claimed:
        log.info("flush: %d due metric(s) -> %d batch(es)", claimed, batches)
    return {"claimed": claimed, "batches": batches}


# --- pushing a batch -----------------------------------------------------------------------
SENDING_LEASE_SECONDS = 120  # > one operation's deadline: a 'sending' batch older than this was lost


def push(batch_id: int, client: object | None = None) -> str:
    """Send one batch; on Good advance the sync state. Returns the batch's new status.

    Raises :class:`CanaryUnavailable` after marking the batch failed and putting its
    metrics back to pending, so the task shows as failed (Flower) and nothing is lost.
    """
    from canary.client import CanaryClient
    from canary.errors import CanaryRejected, CanaryUnavailable

    with connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.canary_push_batches SET status = 'sending', attempts = attempts + 1"
            " WHERE id = %s AND (status = 'queued'"
            "   OR (status = 'sending' AND updated_at < now() - %s * interval '1 s')) RETURNING body::text",
            [batch_id, SENDING_LEASE_SECONDS])
        row = cur.fetchone()
    if row is None:
        return "skipped"  # done already, or another worker holds it
    body = row[0]  # JSON text, sent as it is
    client = client or CanaryClient()
    try:
        client.store_properties(body)  # type: ignore[attr-defined]
    except CanaryRejected as exc:
        _give_back(batch_id, "rejected", str(exc), delay=settings.CANARY_REJECTED_RETRY_SECONDS)
        log.error("batch %s rejected by Canary: %s", batch_id, exc)
        return "rejected"
    except CanaryUnavailable as exc:
        _give_back(batch_id, "failed", str(exc), delay=30)
        raise
    _acknowledge(batch_id)
    return "acked"


def _give_back(batch_id: int, status: str, error: str, *, delay: float) -> None:
    """End a batch unsuccessfully: its metrics return to pending (due after ``delay``)."""
    from canary import metrics
    from cdcsync.pending import mark_now

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("UPDATE uns_meta.canary_push_batches SET status = %s, error = %s WHERE id = %s",
                        [status, error[:5000], batch_id])
            cur.execute("DELETE FROM uns_meta.canary_inflight WHERE batch_id = %s RETURNING metric_id", [batch_id])
            metric_ids = [r[0] for r in cur.fetchall()]
        mark_now(metric_ids, reason=f"batch {status}", delay=delay)
    metrics.BATCHES.labels(status).inc()


def _acknowledge(batch_id: int) -> None:
    """Canary said Good: the targets become the acknowledged state, in one transaction."""
    from canary import metrics

    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT targets FROM uns_meta.canary_push_batches WHERE id = %s FOR UPDATE", [batch_id])
            raw = cur.fetchone()[0]
            targets = raw if isinstance(raw, dict) else json.loads(raw)
            ids = [int(m) for m in targets]
            births = _end_to_end(cur, ids)
            cur.execute(
                "INSERT INTO uns_meta.canary_sync_state AS s (metric_id, canary_id, properties, acked_at, batch_id)"
                " SELECT t.id, t.cid, t.props, now(), %s"
                " FROM unnest(%s::bigint[], %s::text[], %s::jsonb[]) AS t(id, cid, props)"
                " ON CONFLICT (metric_id) DO UPDATE SET canary_id = EXCLUDED.canary_id,"
                " properties = EXCLUDED.properties, acked_at = EXCLUDED.acked_at, batch_id = EXCLUDED.batch_id",
                [batch_id, ids, [targets[str(m)]["canary_id"] for m in ids],
                 [json.dumps(targets[str(m)]["properties"]) for m in ids]])
            cur.execute("DELETE FROM uns_meta.canary_inflight WHERE batch_id = %s", [batch_id])
            cur.execute("UPDATE uns_meta.canary_push_batches SET status = 'acked', error = '' WHERE id = %s",
                        [batch_id])
    metrics.BATCHES.labels("acked").inc()
    metrics.TAGS_PUSHED.inc(len(ids))
    for seconds, _frame_id in births:
        metrics.END_TO_END.observe(seconds)
    frame_ids = sorted({frame_id for _seconds, frame_id in births})
    log.info("batch %s acknowledged: %d tag(s), changes of %d birth frame(s)", batch_id, len(ids), len(frame_ids),
             extra={"batch_id": batch_id, "frame_ids": frame_ids})


def _end_to_end(cur, metric_ids: list[int]) -> list[tuple[float, int]]:  # type: ignore[no-untyped-def]
    """(birth received → now, frame id) for metrics whose latest birth change is newer than their last ack."""
    cur.execute(
        "SELECT extract(epoch FROM now() - f.received_at), f.id FROM ("
        "  SELECT DISTINCT ON (v.metric_id) v.metric_id, v.changed_by FROM uns_meta.metric_versions v"
        "  WHERE v.metric_id = ANY(%s) ORDER BY v.metric_id, v.id DESC) last"
        " JOIN uns_meta.birth_frames f ON last.changed_by = 'birth:' || f.id"
        " LEFT JOIN uns_meta.canary_sync_state s ON s.metric_id = last.metric_id"
        " WHERE s.acked_at IS NULL OR f.received_at > s.acked_at", [metric_ids])
    return [(float(r[0]), int(r[1])) for r in cur.fetchall()]


def redrive(older_than_seconds: float = 60) -> int:
    """Re-enqueue batches whose task was lost (still queued, or sending past the lease)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT id FROM uns_meta.canary_push_batches WHERE (status = 'queued' AND updated_at < now() - %s"
            " * interval '1 s') OR (status = 'sending' AND updated_at < now() - %s * interval '1 s') ORDER BY id"
            " LIMIT 1000", [older_than_seconds, SENDING_LEASE_SECONDS])
        ids = [r[0] for r in cur.fetchall()]
    if ids:
        log.warning("re-driving %d push batch(es) whose task was lost", len(ids))
        _enqueue(ids)
    return len(ids)
