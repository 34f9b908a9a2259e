"""``resync_canary``: push the effective state of a scope to Canary — the backfill and repair tool.

Without ``--dry-run`` the scope's acknowledged state is forgotten and its metrics
become due now, so the next flush (run here at once) sends each its full set.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from canary.effective import effective_targets
from canary.sync import GOOD_QUALITY, canary_timestamp, resync
from canary.tasks import enqueue_push
from catalog.models import Device, Metric


class Command(BaseCommand):
    help = "Push effective metadata to Canary for a device, a metric or everything (--dry-run prints it)."

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--device", help="device UNS path, e.g. Secil/Portugal/Cement")
        scope.add_argument("--metric", help="metric UNS path or canary id")
        scope.add_argument("--all", action="store_true", help="every active metric")
        parser.add_argument("--dry-run", action="store_true", help="print the storeData rows, change nothing")

    def handle(self, *args: object, **opts: object) -> None:
        metrics = Metric.objects.filter(retired_at__isnull=True)
        if opts["device"]:
            if not Device.objects.filter(uns_path=opts["device"]).exists():
                raise CommandError(f"no device with UNS path {opts['device']!r}")
            metrics = metrics.filter(device__uns_path=opts["device"])
        elif opts["metric"]:
            key = str(opts["metric"])
            metrics = metrics.filter(canary_id=key) if "/" not in key else metrics.filter(uns_path=key)
            if not metrics.exists():
                raise CommandError(f"no active metric with UNS path or canary id {key!r}")
        ids = list(metrics.values_list("id", flat=True))
        if opts["dry_run"]:
            ts = canary_timestamp()
            for chunk in range(0, len(ids), 2000):
                for target in effective_targets(ids[chunk:chunk + 2000]).values():
                    rows = [[name, ts, value, GOOD_QUALITY] for name, value in sorted(target.properties.items())]
                    self.stdout.write(json.dumps({target.canary_id: rows}, ensure_ascii=False))
            self.stdout.write(f"dry run: {len(ids)} metric(s) would be pushed in full")
            return
        result = resync(ids, enqueue_push)
        self.stdout.write(f"{len(ids)} metric(s) re-synced: {result['batches']} batch(es) queued for the canary "
                          f"worker (remaining metrics, if any, follow with the next flush)")
