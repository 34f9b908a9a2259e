"""Quarantined tags: metrics whose change Canary refused on its own (docs/architecture.md).

:mod:`canary.push` quarantines a metric when Canary refuses a batch holding only its tag, and ends
the quarantine when a later push of it is acknowledged. Nothing retries a quarantined metric
blindly: a change of its metadata marks it pending as usual, and a steward may ask for another
push (:func:`release`, the admin's "Push again").
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from cdcsync.pending import mark_now


def release(metric_ids: Iterable[int]) -> list[int]:
    """Push these quarantined metrics again: pending, due now. Their quarantine row stays until
    Canary acknowledges the push (a new refusal updates it). Returns those that were quarantined
    (other ids are ignored)."""
    ids = sorted(set(metric_ids))
    if not ids:
        return []
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT metric_id FROM uns_meta.canary_quarantine WHERE metric_id = ANY(%s) ORDER BY metric_id",
                    [ids])
        held = [r[0] for r in cur.fetchall()]
        mark_now(held, reason="quarantine release")
    return held


def count() -> int:
    """Metrics in quarantine now."""
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM uns_meta.canary_quarantine")
        return int(cur.fetchone()[0])
