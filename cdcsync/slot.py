"""Logical replication slot helpers over plain SQL (psycopg 3; no Django).

``cdc_consume`` reads the slot with ``pg_logical_slot_peek_binary_changes`` (which does not move
it) and confirms with ``pg_replication_slot_advance`` only after its own commit: at-least-once,
never a lost change. Only advance to the end LSN of a fully processed Commit (after a drained peek,
to the flush position taken before it, ``upto_lsn``, when that is further): a position inside a
transaction would make the next peek skip the rest of it. Why, and what PostgreSQL 15 does with
slots: docs/cdc.md, "Reading and confirming: peek, then advance" and "How PostgreSQL 15 treats a slot".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cdcsync.pgoutput import parse_lsn
from metasync.db import scalar

__all__ = ["advance", "ensure_slot", "flush_lsn", "iter_peek", "peek", "slot_status", "verify_publication"]

Change = tuple[str, int, bytes]  # (lsn, xid, pgoutput message)

_PEEK = (
    "SELECT lsn::text, xid::text::bigint, data"
    " FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, 'proto_version', '1', 'publication_names', %s)"
)


def _publication_option(publication: str) -> str:
    return '"' + publication.replace('"', '""') + '"'


def ensure_slot(conn: psycopg.Connection, slot: str, plugin: str = "pgoutput") -> bool:
    """Create logical slot ``slot`` unless it exists; return whether it was created.

    An existing slot of another kind, plugin or database is an error (consuming it would be wrong).
    Use an autocommit connection: creation is refused in a transaction that has written.
    """
    row = conn.execute(
        "SELECT slot_type, plugin, database, current_database() FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        try:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, plugin))
            return True
        except psycopg.errors.DuplicateObject:
            # Created by a concurrent consumer between our check and our create: check it.
            row = conn.execute(
                "SELECT slot_type, plugin, database, current_database() FROM pg_replication_slots"
                " WHERE slot_name = %s", (slot,),
            ).fetchone()
            if row is None:
                raise
    slot_type, existing_plugin, database, current = row
    if slot_type != "logical" or existing_plugin != plugin or database != current:
        raise RuntimeError(f"replication slot {slot!r} exists but is {slot_type} / plugin {existing_plugin!r} /"
                           f" database {database!r}; expected logical / {plugin!r} / {current!r}")
    return False


def verify_publication(conn: psycopg.Connection, publication: str, expected_tables: Iterable[str]) -> list[str]:
    """Problems that would make CDC miss changes of ``expected_tables`` (``schema.table``); [] when sound.

    Checks: wal_level, the publication exists, publishes insert/update/delete/truncate, covers
    exactly the expected tables with no row filter and at least their key columns (a column list
    may leave the others out: the consumer reads only metric ids), and each table has a replica
    identity that lets a DELETE carry its key.
    """
    problems: list[str] = []
    wal_level = scalar(conn, "SHOW wal_level")
    if wal_level != "logical":
        problems.append(f"wal_level is {wal_level!r}, logical decoding needs 'logical' (server restart)")
    pub = conn.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = %s",
        (publication,),
    ).fetchone()
    if pub is None:
        return [*problems, f"publication {publication!r} does not exist"]
    for flag, action in zip(pub[:4], ("insert", "update", "delete", "truncate"), strict=True):
        if not flag:
            problems.append(f"publication {publication!r} does not publish {action}")
    if pub[4]:
        problems.append(f"publication {publication!r} is FOR ALL TABLES; expected exactly the listed tables")

    expected = sorted(set(expected_tables))
    published = {
        f"{schema}.{table}": (rowfilter, columns)
        for schema, table, rowfilter, columns in conn.execute(
            "SELECT schemaname, tablename, rowfilter, attnames::text[] FROM pg_publication_tables WHERE pubname = %s",
            (publication,),
        ).fetchall()
    }
    for table in expected:
        if table not in published:
            problems.append(f"publication {publication!r} does not include {table}")
    for table in sorted(set(published) - set(expected)):
        problems.append(f"publication {publication!r} includes unexpected table {table}")

    for table in expected:
        schema, _, name = table.rpartition(".")
        info = conn.execute(
            """
            SELECT c.relreplident,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)),
                   ARRAY(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                         WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY a.attnum)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
            """,
            (schema or "public", name),
        ).fetchone()
        if info is None:
            problems.append(f"table {table} does not exist")
            continue
        identity, has_key, key_columns = info
        if identity == "n":
            problems.append(f"{table} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be published")
        elif identity in ("d", "i") and not has_key:
            problems.append(f"{table} has no primary key / replica identity index: deletes carry no key")
        if table in published:
            rowfilter, published_columns = published[table]
            if rowfilter:
                problems.append(f"publication {publication!r} filters rows of {table} (WHERE {rowfilter}):"
                                " changes would be missed")
            missing = [c for c in key_columns if c not in (published_columns or key_columns)]
            if missing:
                problems.append(f"publication {publication!r} leaves out key columns of {table}: "
                                f"{', '.join(missing)}")
    return problems


def peek(
    conn: psycopg.Connection, slot: str, publication: str, *, upto_nchanges: int | None,
    upto_lsn: str | None = None,
) -> list[Change]:
    """Changes after the slot's confirmed position, without consuming them: [(lsn, xid, message)].

    ``upto_nchanges`` is a soft limit checked at transaction boundaries (None: no limit): whole
    transactions always arrive, so the result can be far larger; fewer rows than the limit means
    the peek reached ``upto_lsn`` (or the end of flushed WAL). ``upto_lsn``: only transactions
    committed up to it. See :func:`iter_peek` for a streaming variant with bounded client memory.
    """
    cur = psycopg.Cursor(conn)
    cur.execute(_PEEK, (slot, upto_lsn, upto_nchanges, _publication_option(publication)), binary=True)
    return cur.fetchall()


def iter_peek(
    conn: psycopg.Connection, slot: str, publication: str, *, upto_nchanges: int | None,
    upto_lsn: str | None = None, fetch_size: int = 20_000,
) -> Iterator[Change]:
    """Like :func:`peek`, but fetched ``fetch_size`` rows at a time through a server-side cursor.

    The server still materialises the result (spilling to disk past ``work_mem``); the client holds
    one batch. Runs in its own transaction on ``conn`` (which must not be inside one it cares about).
    """
    with conn.transaction(), psycopg.ServerCursor(conn, "cdcsync_peek") as cur:
        cur.execute(_PEEK, (slot, upto_lsn, upto_nchanges, _publication_option(publication)), binary=True)
        while rows := cur.fetchmany(fetch_size):
            yield from rows


def flush_lsn(conn: psycopg.Connection) -> str:
    """The server's WAL flush position: the ``upto_lsn`` bound of a poll (docs/cdc.md)."""
    return str(scalar(conn, "SELECT pg_current_wal_flush_lsn()::text"))


def advance(conn: psycopg.Connection, slot: str, lsn: str) -> str:
    """Confirm everything up to ``lsn`` (a Commit's end_lsn); return the slot's confirmed position.

    Never moves backwards: an ``lsn`` at or below the confirmed position is a no-op (a re-read
    after a crash, or a second consumer that got there first), not an error.
    """
    target = parse_lsn(lsn)  # validates before it reaches SQL
    row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                       (slot,)).fetchone()
    if row is None:
        raise LookupError(f"replication slot {slot!r} does not exist")
    if row[0] is not None and parse_lsn(row[0]) >= target:
        return row[0]
    try:
        end = scalar(conn, "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
    except psycopg.errors.ObjectNotInPrerequisiteState:
        # "cannot advance replication slot to X, minimum is Y": another consumer got further meanwhile.
        row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
        if row is None or row[0] is None or parse_lsn(row[0]) < target:
            raise
        return row[0]
    return end


def slot_status(conn: psycopg.Connection, slot: str) -> dict[str, Any] | None:
    """Slot health for metrics and ``cdc_status``; None when the slot does not exist.

    Keys: slot, plugin, database, active, active_pid, restart_lsn, confirmed_flush_lsn,
    current_lsn (str LSNs), lag_bytes (current WAL position − confirmed_flush_lsn: what the consumer
    has not confirmed yet), retained_bytes (current − restart_lsn: WAL the slot keeps on disk),
    wal_status ('reserved', 'extended', 'unreserved', 'lost'), safe_wal_size (bytes before the slot
    would be lost to max_slot_wal_keep_size; None when unlimited).
    """
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute(
        """
        SELECT slot_name AS slot, plugin, database, active, active_pid,
               restart_lsn::text, confirmed_flush_lsn::text, pg_current_wal_lsn()::text AS current_lsn,
               pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes,
               pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
               wal_status, safe_wal_size
        FROM pg_replication_slots WHERE slot_name = %s
        """,
        (slot,),
    ).fetchone()
