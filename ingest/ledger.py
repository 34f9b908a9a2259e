"""Writing frames into the birth ledger (the claim check: the bytes stay in PostgreSQL)."""

from __future__ import annotations

import hashlib
from datetime import datetime

import psycopg
from django.db import connection


def store_frame(topic: str, payload: bytes, received_at: datetime | None = None) -> int:
    """Insert one received frame with status ``received``; returns its ledger id.

    The payload is bound as a binary parameter (server-side binding), so a
    40 MB birth is sent as 40 MB, not as an 80 MB hex literal.
    """
    connection.ensure_connection()
    digest = hashlib.sha256(payload).digest()
    with psycopg.Cursor(connection.connection) as cur:
        cur.execute(
            "INSERT INTO uns_meta.birth_frames (topic, payload, size, sha256, received_at, status, reason, attempts)"
            " VALUES (%s, %b, %s, %b, coalesce(%s, now()), 'received', '', 0) RETURNING id",
            (topic, payload, len(payload), digest, received_at),
        )
        (frame_id,) = cur.fetchone()  # type: ignore[misc]
    return int(frame_id)
