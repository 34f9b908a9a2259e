"""``replay_birth FILE``: feed a captured frame through exactly the ingest code path.

The frame is written to the birth ledger and applied by the same function the
``process_birth`` task calls. ``--dry-run`` does all of it inside a transaction
that is rolled back, and prints the catalog diff it would have made.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog.apply import process_birth
from ingest.ledger import store_frame, store_frame_file
from ingest.sparkplug import DecodeError, payload_from_json
from metasync.procstat import peak_rss_mb


def is_json(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4096).lstrip()[:1] == b"{"


def read_frame_file(path: Path) -> bytes:
    """Binary protobuf as is; protobuf JSON mapping (like shared/fixtures/*.pb.json) converted."""
    data = path.read_bytes()
    if data.lstrip()[:1] == b"{":
        try:
            return payload_from_json(data)
        except DecodeError as exc:
            raise CommandError(f"{path}: {exc}") from None
    return data


class Command(BaseCommand):
    help = "Replay a captured DBIRTH (binary protobuf or protobuf JSON) through ledger + apply."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--topic", required=True,
                            help="the frame's MQTT topic, e.g. spBv1.0/Secil/DBIRTH/Portugal/Cement")
        parser.add_argument("--dry-run", action="store_true", help="print the catalog diff, write nothing")
        parser.add_argument("--stats", action="store_true", help="print elapsed seconds and peak RSS")

    def handle(self, *args: object, **opts: object) -> None:
        path = opts["file"]
        if not path.is_file():  # type: ignore[union-attr]
            raise CommandError(f"{path}: no such file")
        started = time.monotonic()
        topic = str(opts["topic"])
        if opts["dry_run"]:
            with transaction.atomic():
                frame_id = self._store(topic, path)  # type: ignore[arg-type]
                outcome = process_birth(frame_id, dry_run=True)
                transaction.set_rollback(True)
            for version in outcome.diff:
                self.stdout.write(json.dumps(version, ensure_ascii=False, default=str))
            self.stdout.write(f"dry run: would be {outcome.status} {outcome.counts} {outcome.reason}".rstrip())
        else:
            frame_id = self._store(topic, path)  # type: ignore[arg-type]
            outcome = process_birth(frame_id)
            self.stdout.write(f"frame {frame_id}: {outcome.status} {outcome.counts} {outcome.reason}".rstrip())
        if opts["stats"]:
            peak_mb = peak_rss_mb()
            self.stdout.write(f"elapsed_seconds={time.monotonic() - started:.3f} peak_rss_mb={peak_mb:.1f}")
        if outcome.status == "rejected":
            raise CommandError(f"frame rejected: {outcome.reason}")

    @staticmethod
    def _store(topic: str, path: Path) -> int:
        """Into the ledger: a binary file is streamed from disk, JSON is converted in memory."""
        if is_json(path):
            return store_frame(topic, read_frame_file(path))
        return store_frame_file(topic, path)
