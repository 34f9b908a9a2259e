"""Node and device lifecycle from NBIRTH/NDEATH/DBIRTH/DDEATH (docs/sparkplug.md, "Lifecycle").

Each function is one statement (or two) in its own autocommit: lifecycle is a status, not
metadata, so it is never versioned. Sparkplug 3.0's bdSeq rule: an NDEATH ends the node's session
only when its bdSeq equals the one of the NBIRTH that opened it; the node's devices go offline with it.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction


def node_birth(group_id: str, edge: str, bd_seq: int | None, at: datetime) -> None:
    """Node online, unless this session's NDEATH was already seen (reordered): then it stays offline."""
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO uns_meta.node_states (group_id, edge, online, bd_seq, last_birth_at)"
            " VALUES (%s, %s, true, %s, %s) ON CONFLICT (group_id, edge) DO UPDATE"
            " SET online = excluded.bd_seq IS DISTINCT FROM node_states.early_death_bd_seq,"
            " bd_seq = excluded.bd_seq, last_birth_at = excluded.last_birth_at, early_death_bd_seq = NULL",
            (group_id, edge, bd_seq, at))


def node_death(group_id: str, edge: str, bd_seq: int | None, at: datetime) -> bool:
    """End the node's session if ``bd_seq`` matches its NBIRTH's; returns whether it did."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "UPDATE uns_meta.node_states SET online = false, last_death_at = %s, early_death_bd_seq = NULL"
            " WHERE group_id = %s AND edge = %s AND online AND bd_seq IS NOT DISTINCT FROM %s",
            (at, group_id, edge, bd_seq))
        if cur.rowcount == 0:  # an older session's death, or this one's ahead of its birth: remember it
            cur.execute(
                "INSERT INTO uns_meta.node_states (group_id, edge, online, early_death_bd_seq, last_death_at)"
                " VALUES (%s, %s, false, %s, %s) ON CONFLICT (group_id, edge) DO UPDATE"
                " SET early_death_bd_seq = excluded.early_death_bd_seq",
                (group_id, edge, bd_seq, at))
            return False
        cur.execute("UPDATE uns_meta.device_states SET online = false, last_death_at = %s"
                    " WHERE group_id = %s AND edge = %s AND online", (at, group_id, edge))
    return True


def device_birth(group_id: str, edge: str, device: str, at: datetime) -> None:
    _device(group_id, edge, device, True, at)


def device_death(group_id: str, edge: str, device: str, at: datetime) -> None:
    _device(group_id, edge, device, False, at)


def _device(group_id: str, edge: str, device: str, online: bool, at: datetime) -> None:
    column = "last_birth_at" if online else "last_death_at"
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO uns_meta.device_states (group_id, edge, device, online, {column})"  # noqa: S608 (fixed names)
            f" VALUES (%s, %s, %s, %s, %s) ON CONFLICT (group_id, edge, device) DO UPDATE"
            f" SET online = excluded.online, {column} = excluded.{column}",
            (group_id, edge, device, online, at))


def online_counts() -> tuple[int, int]:
    """(nodes online, devices online)."""
    with connection.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM uns_meta.node_states WHERE online),"
                    " (SELECT count(*) FROM uns_meta.device_states WHERE online)")
        nodes, devices = cur.fetchone()
    return int(nodes), int(devices)
