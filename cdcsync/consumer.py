"""The CDC consumer: replication slot → durable pending rows (docs/cdc.md).

Why psycopg 3 with ``pg_logical_slot_peek_binary_changes`` + ``pg_replication_slot_advance``
(polling) rather than psycopg2 streaming: the slot is only advanced after the pending
rows a poll produced are committed, in plain SQL we control, so a crash at any instant
re-reads at most one poll (at-least-once; marking pending is idempotent) and loses
nothing; there is no streaming connection state, feedback timing or second driver.
The price is up to ``CDC_POLL_SECONDS`` of extra latency, irrelevant beside a 180 s
debounce. Details and pitfalls in :mod:`cdcsync.slot`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import connection

from cdcsync import metrics
from cdcsync.pending import backlog, mark_pending
from cdcsync.pgoutput import (
    Begin,
    Commit,
    PgOutputError,
    RelationCache,
    decode_message,
    format_lsn,
    metric_ids_of,
    parse_lsn,
)
from cdcsync.slot import advance, ensure_slot, flush_lsn, iter_peek, slot_status, verify_publication
from metasync import locks
from metasync.db import bounded_transaction

log = logging.getLogger(__name__)

PUBLISHED = ("uns_meta.metrics", "uns_meta.metric_properties")
_TABLE = {"metrics": "metrics", "metric_properties": "metric_properties"}


@contextmanager
def replication_connection() -> Iterator[psycopg.Connection]:
    """Autocommit connection for the slot functions, always on the app's own database."""
    db = settings.DATABASES["default"]
    if settings.CDC_DATABASE_URL:
        conn = psycopg.connect(settings.CDC_DATABASE_URL, dbname=db["NAME"], autocommit=True,
                               application_name="metasync-cdc-slot")
    else:
        connection.ensure_connection()
        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params["application_name"] = "metasync-cdc-slot"
        conn = psycopg.connect(**params, autocommit=True)
    try:
        # The decoding of the slot runs in this session: a 100,000-metric birth is one transaction
        # of 1.1M row changes, which the default 64 MB spills to disk (3.5 s to decode it, 1.2 s
        # in memory). docs/cdc.md, "Decoding speed".
        conn.execute("SELECT set_config('logical_decoding_work_mem', %s, false)",
                     (f"{settings.CDC_DECODING_WORK_MEM_MB}MB",))
        yield conn
    finally:
        conn.close()


class Consumer:
    """One poll = one unit of work: read committed changes, mark pending, commit, advance."""

    def __init__(self, conn: psycopg.Connection, *, slot: str | None = None, publication: str | None = None,
                 max_changes: int | None = None) -> None:
        self.conn = conn
        self.slot = slot or settings.CDC_SLOT
        self.publication = publication or settings.CDC_PUBLICATION
        self.max_changes = max_changes or settings.CDC_MAX_CHANGES
        self.relations = RelationCache()

    def setup(self) -> None:
        problems = verify_publication(self.conn, self.publication, PUBLISHED)
        if problems:
            raise RuntimeError(f"publication {self.publication}: " + "; ".join(problems))
        if ensure_slot(self.conn, self.slot):
            log.warning("replication slot %s did not exist: created it (changes before now are not in it; "
                        "run `manage.py resync_canary --all` if any could be missing)", self.slot)
        else:
            log.info("replication slot %s found; publication %s verified", self.slot, self.publication)

    def poll_once(self) -> int:
        """Process the committed changes available now; returns how many slot rows were read."""
        bound = flush_lsn(self.conn)
        changes: dict[int, tuple[datetime, int]] = {}
        events: dict[bytes, int] = {}  # kind + relid -> row changes (counted once per poll)
        commit_time: datetime | None = None
        last_commit: int | None = None
        rows = transactions = 0
        for _lsn, _xid, data in iter_peek(self.conn, self.slot, self.publication,
                                          upto_nchanges=self.max_changes, upto_lsn=bound):
            rows += 1
            kind = data[:1]
            if kind in (b"I", b"U", b"D"):
                head = data[:5]
                events[head] = events.get(head, 0) + 1
                if commit_time is None:
                    raise PgOutputError("a row change outside a transaction (no Begin before it)")
                for mid in metric_ids_of(data, self.relations):
                    seen = changes.get(mid)
                    changes[mid] = (commit_time, seen[1] + 1) if seen else (commit_time, 1)
            elif kind == b"B":
                begin = decode_message(data)
                assert isinstance(begin, Begin)
                commit_time = begin.commit_time
            elif kind == b"C":
                commit = decode_message(data)
                assert isinstance(commit, Commit)
                last_commit = commit.end_lsn
                transactions += 1
            elif kind == b"R":
                self.relations.observe(decode_message(data))
            elif kind == b"T":
                self._truncated(decode_message(data), commit_time, changes)
        for head, count in events.items():
            metrics.EVENTS.labels(self._table(head), head[:1].decode()).inc(count)
        drained = rows < self.max_changes
        target = max(parse_lsn(bound), last_commit or 0) if drained else last_commit
        if changes:
            with bounded_transaction("cdc_mark", settings.CDC_STATEMENT_TIMEOUT_SECONDS):
                mark_pending(changes)
            metrics.MARKED.inc(len(changes))
        # Only after the pending rows are committed: a crash before this re-reads the poll.
        if target is not None:
            advance(self.conn, self.slot, format_lsn(target))
        metrics.TRANSACTIONS.inc(transactions)
        if changes:
            log.info("cdc: %d row change(s) in %d transaction(s) -> %d metric(s) pending",
                     rows, transactions, len(changes))
        return rows

    def _table(self, data: bytes) -> str:
        relid = int.from_bytes(data[1:5], "big")
        return self.relations.get(relid).name if relid in self.relations else "unknown"

    def _truncated(self, message, commit_time, changes) -> None:  # type: ignore[no-untyped-def]
        names = [self.relations.get(r).name for r in message.relids if r in self.relations]
        log.warning("TRUNCATE of %s seen in the slot: metrics of the catalog were wiped; nothing to push "
                    "(run `manage.py resync_canary --all` after reloading)", ", ".join(names) or "?")

    def export_gauges(self) -> None:
        status = slot_status(self.conn, self.slot)
        metrics.SLOT_ACTIVE.set(1 if status else 0)
        if status:
            metrics.SLOT_LAG.set(status["lag_bytes"] or 0)
            metrics.SLOT_RETAINED.set(status["retained_bytes"] or 0)
        pending, _, oldest_age = backlog()
        metrics.PENDING.set(pending)
        metrics.PENDING_AGE.set(oldest_age)

    def claim(self) -> bool:
        """Only one consumer works the slot (a slot serves one session at a time); others stand by.

        A session-level advisory lock on the slot connection: it is released when that
        connection ends, including when the process is killed.
        """
        return locks.try_session_lock(self.conn, locks.cdc_slot_key(self.slot))
