"""The birth ledger's storage: frames in, payloads out (the claim check: the bytes stay in PostgreSQL)."""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime
from pathlib import Path

import psycopg
from django.db import connection

from metasync.db import scalar


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


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_FILE_CHUNK = 8 * 1024 * 1024


def store_frame_file(topic: str, path: Path) -> int:
    """Like :func:`store_frame` for a frame on disk, streamed with a binary COPY in 8 MB pieces:
    a birth of hundreds of MB (``replay_birth``) is never held in memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_FILE_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    connection.ensure_connection()
    conn = connection.connection
    frame_id = scalar(conn, "SELECT nextval(pg_get_serial_sequence('uns_meta.birth_frames', 'id'))")

    def field(data: bytes) -> bytes:
        return struct.pack("!i", len(data)) + data

    with psycopg.Cursor(conn) as cur, cur.copy(
        "COPY uns_meta.birth_frames (id, topic, size, sha256, status, reason, attempts, payload)"
        " FROM STDIN (FORMAT binary)"
    ) as cp:
        cp.write(_COPY_SIGNATURE + struct.pack("!h", 8) + field(struct.pack("!q", frame_id))
                 + field(topic.encode()) + field(struct.pack("!i", size)) + field(digest.digest())
                 + field(b"received") + field(b"") + field(struct.pack("!i", 0)) + struct.pack("!i", size))
        with path.open("rb") as fh:
            while chunk := fh.read(_FILE_CHUNK):
                cp.write(chunk)
        cp.write(struct.pack("!h", -1))
    return int(frame_id)


PAYLOAD_SLICE = 16 * 1024 * 1024


def read_payload(conn: psycopg.Connection, frame_id: int) -> bytearray:
    """A frame's bytes, read in slices into one buffer: a whole-value fetch would hold the
    payload twice (driver result + Python bytes), hundreds of MB for a huge birth."""
    size = scalar(conn, "SELECT coalesce(octet_length(payload), 0) FROM uns_meta.birth_frames WHERE id = %s",
                  (frame_id,))
    buffer = bytearray(size)
    with psycopg.Cursor(conn) as cur:  # server-side binding: binary results allowed
        for offset in range(0, size, PAYLOAD_SLICE):
            cur.execute("SELECT substring(payload FROM %s FOR %s) FROM uns_meta.birth_frames WHERE id = %s",
                        (offset + 1, PAYLOAD_SLICE, frame_id), binary=True)
            (piece,) = cur.fetchone() or (b"",)
            buffer[offset:offset + len(piece)] = piece
            del piece
    return buffer
