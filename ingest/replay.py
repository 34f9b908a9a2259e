"""Replaying a captured frame (binary protobuf, or protobuf's JSON mapping) through the ledger:
the same code path a frame from MQTT takes (``replay_birth``)."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from ingest.ledger import store_frame, store_frame_file
from ingest.processing import Outcome, process_frame
from sparkplug.codec import payload_from_json


def is_json(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4096).lstrip()[:1] == b"{"


def read_frame_file(path: Path) -> bytes:
    """Binary protobuf as is; the protobuf JSON mapping converted (raises ``DecodeError``)."""
    data = path.read_bytes()
    if data.lstrip()[:1] == b"{":
        return payload_from_json(data)
    return data


def store_file(topic: str, path: Path) -> int:
    """Into the ledger: a binary file is streamed from disk, JSON is converted in memory."""
    if is_json(path):
        return store_frame(topic, read_frame_file(path))
    return store_frame_file(topic, path)


def replay(topic: str, path: Path, *, dry_run: bool = False) -> Outcome:
    """Store the file as a frame of ``topic`` and process it; a dry run rolls everything back."""
    if not dry_run:
        return process_frame(store_file(topic, path))
    with transaction.atomic():
        outcome = process_frame(store_file(topic, path), dry_run=True)
        transaction.set_rollback(True)
    return outcome
