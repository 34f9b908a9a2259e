"""Small helpers for raw SQL on psycopg 3 connections (the hot paths bypass the ORM)."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.abc import Params


def scalar(conn: psycopg.Connection, query: LiteralString | bytes | sql.SQL | sql.Composed,
           params: Params | None = None) -> Any:
    """The first column of the single row ``query`` returns (an aggregate, ``SHOW``, a function)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"query returned no row: {query!r}")
    return row[0]
