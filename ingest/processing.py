"""Processing a ledger frame: claim it, judge it, let the catalog apply it, record the outcome.

Called by the ``process_birth`` task and by ``replay_birth``: one code path. One transaction per
frame: the catalog's writes and the frame's final status commit together, and births of one
device are serialized by an advisory lock, so duplicate deliveries, retries and concurrent
workers apply a frame at most once (docs/architecture.md, "Key decisions").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.dispatch import Signal
from psycopg.types.json import Jsonb

from catalog import validation
from catalog.apply import Rejected, apply_birth
from ingest.ledger import read_payload
from ingest.models import BirthFrame
from ingest.rebirth import request_rebirth
from metasync import locks
from metasync.db import bounded_transaction
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
    # Only filled in dry-run mode: tag -> the rows Canary would receive (ingest.replay.dry_run_preview).
    canary_rows: dict[str, list] = field(default_factory=dict)
    # Why a frame was rejected: "decode" (payload), "topic" (unparseable topic), "invalid" (rules).
    cause: str = ""


# Sent in a dry run before its transaction is rolled back, with ``metric_ids`` (the metrics the frame
# changed); a receiver returns ``{tag: rows}`` its stage would send. The Canary stage answers
# (canary.apps) without ingest importing a stage above it (docs/architecture.md).
dry_run_preview = Signal()


def _preview(outcome: Outcome) -> None:
    ids = sorted({version["metric_id"] for version in outcome.diff})
    if ids:
        for _receiver, rows in dry_run_preview.send(sender=Outcome, metric_ids=ids):
            outcome.canary_rows.update(rows)  # type: ignore[arg-type]  # receivers return {tag: rows}


def process_frame(frame_id: int, *, dry_run: bool = False) -> Outcome:
    """Apply ledger frame ``frame_id``; idempotent. Returns what became of it.

    Raises what it did not expect (a bug, a database error the frame causes): the caller notes it
    with :func:`record_failure`, which bounds the retries."""
    frame = BirthFrame.objects.filter(pk=frame_id).values("topic", "status").first()
    if frame is None:
        return Outcome(frame_id, "missing", "no such ledger frame")
    if frame["status"] != BirthFrame.Status.RECEIVED:
        return Outcome(frame_id, frame["status"], "already processed")
    if not dry_run:
        given_up = _start_attempt(frame_id)
        if given_up is not None:
            return given_up
    started = time.monotonic()
    try:
        topic = parse_topic(frame["topic"])
        if topic.verb != "DBIRTH" or topic.device is None:
            raise Rejected(f"not a DBIRTH topic: {frame['topic']!r} (verb {topic.verb})")
        validation.check_topic_ids(topic.group_id, topic.edge, topic.device)
        with bounded_transaction("apply", settings.BIRTH_STATEMENT_TIMEOUT_SECONDS):
            outcome = _process(frame_id, frame["topic"], topic, dry_run)
            _finish(frame_id, outcome, time.monotonic() - started)
            if dry_run:
                _preview(outcome)
                transaction.set_rollback(True)
        return outcome
    except (Rejected, validation.Invalid, DecodeError, TopicError) as exc:
        cause = "decode" if isinstance(exc, DecodeError) else "topic" if isinstance(exc, TopicError) else "invalid"
        outcome = Outcome(frame_id, BirthFrame.Status.REJECTED, str(exc), cause=cause)
        if not dry_run:
            _finish(frame_id, outcome, time.monotonic() - started)
            if isinstance(exc, Rejected) and exc.unresolved_aliases and settings.REBIRTH_REQUESTS_ENABLED:
                request_rebirth(topic.group_id, topic.edge)
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
    validation.check_header(header.timestamp)
    conn.execute("UPDATE uns_meta.birth_frames SET payload_ts = %s WHERE id = %s", (header.timestamp, frame_id))
    verdict = _duplicate_or_stale(frame_id, topic_name, bytes(row[1]), header.timestamp)
    if verdict:
        return verdict
    applied = apply_birth(topic, payload, changed_by=f"birth:{frame_id}", dry_run=dry_run)
    if applied.unresolved_aliases and settings.REBIRTH_REQUESTS_ENABLED and not dry_run:
        transaction.on_commit(lambda: request_rebirth(topic.group_id, topic.edge))
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


def _start_attempt(frame_id: int) -> Outcome | None:
    """Count this attempt in its own transaction, before any work: an attempt that never ends (a
    worker killed by a huge or poisonous birth) still counts. Too many unfinished attempts end the
    frame ``failed`` (the Outcome returned); otherwise None."""
    connection.ensure_connection()
    with transaction.atomic():
        row = connection.connection.execute(
            "UPDATE uns_meta.birth_frames SET attempts = attempts + 1, retry_at = NULL"
            " WHERE id = %s AND status = 'received' RETURNING attempts, failures, reason", (frame_id,)).fetchone()
    if row is None:  # another delivery processed it meanwhile
        status = BirthFrame.objects.filter(pk=frame_id).values_list("status", flat=True).first()
        return Outcome(frame_id, status or "missing", "already processed")
    attempts, failures, last_error = row
    unfinished = attempts - 1 - failures  # earlier attempts that neither finished nor recorded an error
    if unfinished < settings.BIRTH_MAX_ATTEMPTS * 3:
        return None
    reason = f"processing never finished in {unfinished} attempts (the worker died or lost the database)"
    if last_error:
        reason += f"; last error: {last_error}"
    outcome = Outcome(frame_id, BirthFrame.Status.FAILED, reason)
    _finish(frame_id, outcome, 0.0)
    return outcome


@dataclass(frozen=True)
class Failure:
    attempts: int
    final: bool  # the frame is now `failed`
    retry_in: float  # seconds until the next attempt (when not final)
    error: str


def record_failure(frame_id: int, exc: BaseException) -> Failure:
    """An attempt raised ``exc``: keep its text on the frame; after ``BIRTH_MAX_ATTEMPTS`` failures
    the frame ends ``failed``, before that its next attempt is due after a doubling backoff."""
    error = f"{exc.__class__.__name__}: {exc}".strip()[:2000]
    connection.ensure_connection()
    with transaction.atomic():
        row = connection.connection.execute(
            "UPDATE uns_meta.birth_frames SET failures = failures + 1, reason = %s WHERE id = %s"
            " AND status = 'received' RETURNING failures", (error, frame_id)).fetchone()
    failures = row[0] if row else 0
    if row is None or failures >= settings.BIRTH_MAX_ATTEMPTS:
        if row is not None:
            _finish(frame_id, Outcome(frame_id, BirthFrame.Status.FAILED,
                                      f"failed {failures} attempt(s), the last with {error}"), 0.0)
        return Failure(failures, True, 0.0, error)
    delay = min(settings.BIRTH_RETRY_SECONDS * 2 ** (failures - 1), 300.0)
    with transaction.atomic():
        connection.connection.execute(
            "UPDATE uns_meta.birth_frames SET retry_at = now() + %s * interval '1 s' WHERE id = %s", (delay, frame_id))
    return Failure(failures, False, delay, error)


def _finish(frame_id: int, outcome: Outcome, seconds: float) -> None:
    connection.ensure_connection()
    connection.connection.execute(
        "UPDATE uns_meta.birth_frames SET status = %s, reason = %s, counts = %s, device_id = %s,"
        " processed_at = clock_timestamp(), apply_seconds = %s, retry_at = NULL"
        " WHERE id = %s AND status = 'received'",
        (outcome.status, outcome.reason[:10000], Jsonb(outcome.counts) if outcome.counts else None,
         outcome.device_id, seconds, frame_id))
