"""Processing a ledger frame: claim it, judge it, let the catalog apply it, record the outcome.

Called by the ``process_birth`` task and by ``replay_birth``: one code path. One transaction per
frame: the catalog's writes and the frame's final status commit together, and births of one
device are serialized by an advisory lock, so duplicate deliveries, retries and concurrent
workers apply a frame at most once (docs/architecture.md, "Applying a birth").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from catalog.apply import Rejected, apply_birth
from ingest.ledger import read_payload
from ingest.models import BirthFrame
from ingest.rebirth import request_rebirth
from metasync import locks
from sparkplug.codec import DecodeError, read_header
from sparkplug.topic import Topic, TopicError, parse_topic


@dataclass
class Outcome:
    frame_id: int
    status: str
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    device_id: int | None = None
    # Only filled in dry-run mode: the versions the frame would write.
    diff: list[dict] = field(default_factory=list)
    # Why a frame was rejected: "decode" (payload), "topic" (unparseable topic), "invalid" (rules).
    cause: str = ""


def process_frame(frame_id: int, *, dry_run: bool = False) -> Outcome:
    """Apply ledger frame ``frame_id``; idempotent. Returns what became of it."""
    frame = BirthFrame.objects.filter(pk=frame_id).values("topic", "status").first()
    if frame is None:
        return Outcome(frame_id, "missing", "no such ledger frame")
    if frame["status"] != BirthFrame.Status.RECEIVED:
        return Outcome(frame_id, frame["status"], "already processed")
    started = time.monotonic()
    try:
        topic = parse_topic(frame["topic"])
        if topic.verb != "DBIRTH" or topic.device is None:
            raise Rejected(f"not a DBIRTH topic: {frame['topic']!r} (verb {topic.verb})")
        with transaction.atomic():
            outcome = _process(frame_id, frame["topic"], topic, dry_run)
            _finish(frame_id, outcome, time.monotonic() - started)
            if dry_run:
                transaction.set_rollback(True)
        return outcome
    except (Rejected, DecodeError, TopicError) as exc:
        cause = "decode" if isinstance(exc, DecodeError) else "topic" if isinstance(exc, TopicError) else "invalid"
        outcome = Outcome(frame_id, BirthFrame.Status.REJECTED, str(exc), cause=cause)
        if not dry_run:
            _finish(frame_id, outcome, time.monotonic() - started)
        return outcome


def _process(frame_id: int, topic_name: str, topic: Topic, dry_run: bool) -> Outcome:
    conn = connection.connection
    assert topic.device is not None
    locks.xact_lock(conn, locks.device_key(topic.group_id, topic.edge, topic.device))
    row = conn.execute("SELECT status, sha256 FROM uns_meta.birth_frames WHERE id = %s FOR UPDATE",
                       (frame_id,)).fetchone()
    if row is None or row[0] != BirthFrame.Status.RECEIVED:  # lost a race with another delivery
        return Outcome(frame_id, row[0] if row else "missing", "already processed")
    payload = read_payload(conn, frame_id)
    header = read_header(payload)
    conn.execute("UPDATE uns_meta.birth_frames SET payload_ts = %s WHERE id = %s", (header.timestamp, frame_id))
    verdict = _duplicate_or_stale(frame_id, topic_name, bytes(row[1]), header.timestamp)
    if verdict:
        return verdict
    applied = apply_birth(topic, payload, changed_by=f"birth:{frame_id}", dry_run=dry_run)
    if applied.unresolved_aliases and settings.REBIRTH_REQUESTS_ENABLED and not dry_run:
        group, edge = topic.group_id, topic.edge
        transaction.on_commit(lambda: request_rebirth(group, edge))
    return Outcome(frame_id, BirthFrame.Status.APPLIED, applied.reason, applied.counts, applied.device_id,
                   applied.diff)


def _duplicate_or_stale(frame_id: int, topic_name: str, sha256: bytes, payload_ts: int | None) -> Outcome | None:
    """Same bytes as the topic's last applied frame: duplicate; an older payload timestamp: stale."""
    last = connection.connection.execute(
        "SELECT id, payload_ts, sha256 FROM uns_meta.birth_frames"
        " WHERE topic = %s AND status = 'applied' ORDER BY payload_ts DESC NULLS LAST, id DESC LIMIT 1",
        (topic_name,),
    ).fetchone()
    if last is None:
        return None
    last_id, last_ts, last_sha = last
    if bytes(last_sha) == sha256:
        return Outcome(frame_id, BirthFrame.Status.DUPLICATE, f"same bytes as applied frame {last_id}")
    if payload_ts is not None and last_ts is not None and payload_ts < last_ts:
        return Outcome(frame_id, BirthFrame.Status.STALE,
                       f"payload timestamp {payload_ts} is older than applied frame {last_id} ({last_ts})")
    return None


def _finish(frame_id: int, outcome: Outcome, seconds: float) -> None:
    connection.ensure_connection()
    connection.connection.execute(
        "UPDATE uns_meta.birth_frames SET status = %s, reason = %s, counts = %s, device_id = %s,"
        " processed_at = now(), apply_seconds = %s, attempts = attempts + 1"
        " WHERE id = %s AND status = 'received'",
        (outcome.status, outcome.reason[:10000], Jsonb(outcome.counts) if outcome.counts else None,
         outcome.device_id, seconds, frame_id))
