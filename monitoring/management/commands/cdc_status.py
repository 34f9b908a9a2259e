"""``cdc_status``: the replication slot, its lag, and the pending backlog, in a few lines."""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand

from cdcsync.consumer import replication_connection
from cdcsync.slot import slot_status
from monitoring.pipeline import pending_status


def _size(n: object) -> str:
    if n is None:
        return "-"
    value = float(n)  # type: ignore[arg-type]
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


class Command(BaseCommand):
    help = "Show the CDC slot (active, lag, retained WAL) and the pending/in-flight sync backlog."

    def handle(self, *args: object, **opts: Any) -> None:
        try:
            with replication_connection() as conn:
                slot = slot_status(conn, settings.CDC_SLOT)
        except psycopg.Error as exc:
            slot = None
            self.stdout.write(f"slot {settings.CDC_SLOT}: cannot read ({exc.__class__.__name__}: {exc})".strip())
        if slot is not None:
            self.stdout.write(
                f"slot {settings.CDC_SLOT}: {'active' if slot.get('active') else 'inactive'}, "
                f"confirmed {slot.get('confirmed_flush_lsn')}, lag {_size(slot.get('lag_bytes'))}, "
                f"retained WAL {_size(slot.get('retained_bytes'))}, wal_status {slot.get('wal_status')}")
        elif slot is None:
            self.stdout.write(f"slot {settings.CDC_SLOT}: MISSING (cdc_consume creates it at start)")
        p = pending_status()
        batches = ", ".join(f"{k} {v}" for k, v in sorted(p.batches.items())) or "none open"
        self.stdout.write(f"pending: {p.pending} metric(s), {p.due} due now, oldest change "
                          f"{p.oldest_age_seconds:.0f}s ago; in flight: {p.inflight}; batches: {batches}; "
                          f"quarantined: {p.quarantined} tag(s)")
