"""Small helpers for raw SQL on psycopg 3 connections (the hot paths bypass the ORM)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from django.db import connection, transaction
from prometheus_client import Counter
from psycopg import sql
from psycopg.abc import Params
from psycopg.errors import QueryCanceled


def scalar(conn: psycopg.Connection, query: LiteralString | bytes | sql.SQL | sql.Composed,
           params: Params | None = None) -> Any:
    """The first column of the single row ``query`` returns (an aggregate, ``SHOW``, a function)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"query returned no row: {query!r}")
    return row[0]


STATEMENT_TIMEOUTS = Counter("metasync_db_statement_timeouts_total",
                             "Statements PostgreSQL cancelled at their statement_timeout, by the work they did",
                             ["work"])


def statement_timeout(conn: psycopg.Connection, seconds: float) -> None:
    """Bound every statement of the current transaction (``SET LOCAL``): a statement that would
    run away (a bad plan, a lock queue) fails with ``QueryCanceled`` instead of stalling silently."""
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(max(1, int(seconds * 1000))),))


def is_statement_timeout(exc: BaseException) -> bool:
    """``exc`` (raised by psycopg, or wrapped by Django) is a statement cancelled at its timeout."""
    return isinstance(exc, QueryCanceled) or isinstance(exc.__cause__, QueryCanceled)


@contextmanager
def counting_timeouts(work: str) -> Iterator[None]:
    """Count a statement timeout raised inside the block under ``work`` (and let it propagate)."""
    try:
        yield
    except Exception as exc:
        if is_statement_timeout(exc):
            STATEMENT_TIMEOUTS.labels(work).inc()
        raise


@contextmanager
def bounded_transaction(work: str, seconds: float, *, index_lookups: bool = False) -> Iterator[None]:
    """A transaction (Django's default connection) whose every statement runs under a
    ``statement_timeout`` of ``seconds``; a timeout is counted under ``work`` and raised.

    ``index_lookups``: the transaction only looks rows up by key (ids, batch ids), so sequential
    scans are priced out: a table analysed while empty is estimated at zero rows whatever it holds
    later, and a plan that scans it once per looked-up row is quadratic (docs/architecture.md,
    "The claim")."""
    with counting_timeouts(work), transaction.atomic():
        connection.ensure_connection()
        statement_timeout(connection.connection, seconds)
        if index_lookups:
            connection.connection.execute("SELECT set_config('enable_seqscan', 'off', true)")
        yield
