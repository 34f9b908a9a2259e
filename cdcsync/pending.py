"""Marking metrics pending: the durable, debounced queue between CDC and Canary (docs/cdc.md).

Trailing debounce with a cap: ``due = min(first change + MAX, last change + DEBOUNCE)``.
Marking is idempotent for a replayed change (same timestamps): the consumer may
re-read WAL after a crash without visible effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

MARK_SQL = """
INSERT INTO uns_meta.sync_pending AS p (metric_id, first_change_at, last_change_at, due_at, changes, reason)
SELECT s.id, s.at, s.at, s.at + make_interval(secs => %(debounce)s), s.n, %(reason)s
  FROM unnest(%(ids)s::bigint[], %(ats)s::timestamptz[], %(ns)s::int[]) AS s(id, at, n)
ON CONFLICT (metric_id) DO UPDATE SET
    last_change_at = GREATEST(p.last_change_at, EXCLUDED.last_change_at),
    due_at = LEAST(p.first_change_at + make_interval(secs => %(cap)s),
                   GREATEST(p.last_change_at, EXCLUDED.last_change_at) + make_interval(secs => %(debounce)s)),
    changes = p.changes + EXCLUDED.changes
"""


def mark_pending(changes: dict[int, tuple[datetime, int]], *, reason: str = "cdc",
                 debounce: float | None = None) -> int:
    """Upsert pending rows: metric id -> (time of its last change, number of changes)."""
    if not changes:
        return 0
    ids = list(changes)
    with connection.cursor() as cur:
        cur.execute(MARK_SQL, {
            "ids": ids, "ats": [changes[i][0] for i in ids], "ns": [changes[i][1] for i in ids],
            "debounce": settings.CDC_DEBOUNCE_SECONDS if debounce is None else debounce,
            "cap": settings.CDC_DEBOUNCE_MAX_SECONDS, "reason": reason,
        })
    return len(ids)


def mark_now(metric_ids: Iterable[int], *, reason: str, delay: float = 0.0) -> int:
    """Pending due after ``delay`` seconds (steward edits, resync, re-pended failures)."""
    now = timezone.now()
    return mark_pending({mid: (now, 1) for mid in metric_ids}, reason=reason, debounce=delay)


def backlog() -> tuple[int, int, float]:
    """(pending metrics, due now, seconds since the oldest pending change)."""
    with connection.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE due_at <= now()),"
                    " coalesce(extract(epoch FROM now() - min(first_change_at)), 0) FROM uns_meta.sync_pending")
        pending, due, oldest = cur.fetchone()
    return pending, due, float(oldest)
