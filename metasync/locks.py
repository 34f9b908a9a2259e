"""PostgreSQL advisory locks: the one registry of their keys, so two features never share one.

Every lock is ``(NAMESPACE, hashtext(key))``; the key names what is serialized.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = 0x6D73  # "ms": metasync's advisory-lock class


def device_key(group_id: str, edge: str, device: str) -> str:
    """Births of one device are applied one at a time (transaction lock)."""
    return f"{group_id}/{edge}/{device}"


def cdc_slot_key(slot: str) -> str:
    """One ``cdc_consume`` works a replication slot (session lock on its slot connection)."""
    return f"cdc:{slot}"


FLUSH_KEY = "flush"  # one flush of due changes at a time (session lock)


def xact_lock(conn: Any, key: str) -> None:
    """Wait for the transaction-level lock on ``key`` (released at commit or rollback)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (NAMESPACE, key))


def try_session_lock(conn: Any, key: str) -> bool:
    """Take the session-level lock on ``key`` if free; released by :func:`unlock` or when the
    connection ends (a killed process included)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (NAMESPACE, key)).fetchone()
    return bool(row and row[0])


def unlock(conn: Any, key: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (NAMESPACE, key))
