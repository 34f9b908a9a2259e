"""``replay_birth FILE``: feed a captured frame through exactly the ingest code path.

``--dry-run`` does all of it inside a transaction that is rolled back, and prints the catalog
diff it would have made, then the rows Canary would receive (``canary <tag> <rows>``: name,
timestamp, value, quality; docs/steward-guide.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingest.replay import replay
from metasync.procstat import peak_rss_mb
from sparkplug.codec import DecodeError


class Command(BaseCommand):
    help = "Replay a captured DBIRTH (binary protobuf or protobuf JSON) through ledger + apply."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--topic", required=True,
                            help="the frame's MQTT topic, e.g. spBv1.0/Secil/DBIRTH/Portugal/Cement")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the catalog diff and the Canary rows it would send; write nothing")
        parser.add_argument("--stats", action="store_true", help="print elapsed seconds and peak RSS")

    def handle(self, *args: object, file: Path, topic: str, dry_run: bool, stats: bool, **opts: object) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        started = time.monotonic()
        try:
            outcome = replay(topic, file, dry_run=dry_run)
        except DecodeError as exc:
            raise CommandError(f"{file}: {exc}") from None
        if dry_run:
            for version in outcome.diff:
                self.stdout.write(json.dumps(version, ensure_ascii=False, default=str))
            for tag, rows in outcome.canary_rows.items():
                self.stdout.write(f"canary {json.dumps(tag, ensure_ascii=False)} "
                                  f"{json.dumps(rows, ensure_ascii=False, default=str)}")
            self.stdout.write(f"dry run: would be {outcome.status} {outcome.counts} {outcome.reason}".rstrip())
        else:
            self.stdout.write(f"frame {outcome.frame_id}: {outcome.status} {outcome.counts} {outcome.reason}".rstrip())
        if stats:
            self.stdout.write(f"elapsed_seconds={time.monotonic() - started:.3f} peak_rss_mb={peak_rss_mb():.1f}")
        if outcome.status == "rejected":
            raise CommandError(f"frame rejected: {outcome.reason}")
