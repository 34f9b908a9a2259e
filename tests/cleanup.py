"""Removing what a test committed to the catalog schema.

Django's test flush only sees the tables of the `public` schema; the catalog lives in `uns_meta`.
canary_property_map keeps its rows: its defaults come from a data migration.
"""

from __future__ import annotations

from django.db import connection

UNS_META_TABLES = ("birth_frames", "canary_inflight", "canary_push_batches", "canary_quarantine", "canary_sync_state",
                   "sync_pending", "property_overrides", "metric_path_lineage", "metric_versions", "metric_properties",
                   "metrics", "devices")


def truncate_uns_meta() -> None:
    with connection.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(f"uns_meta.{t}" for t in UNS_META_TABLES) + " RESTART IDENTITY")
