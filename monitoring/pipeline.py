"""Slot and backlog figures, shared by ``cdc_status``, the consumer's gauges and watchdogs."""

from __future__ import annotations

from django.db import connection


def pending_status() -> dict[str, object]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE due_at <= now()),"
            " coalesce(extract(epoch FROM now() - min(first_change_at)), 0)"
            " FROM uns_meta.sync_pending")
        pending, due, oldest = cur.fetchone()
        cur.execute("SELECT count(*) FROM uns_meta.canary_inflight")
        (inflight,) = cur.fetchone()
        cur.execute("SELECT status, count(*) FROM uns_meta.canary_push_batches"
                    " WHERE status IN ('queued', 'sending', 'failed', 'rejected') GROUP BY status")
        batches = dict(cur.fetchall())
    return {"pending": pending, "due": due, "oldest_age_seconds": float(oldest), "inflight": inflight,
            "batches": batches}
