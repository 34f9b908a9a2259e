"""Receivers of signals from the stages below (connected in canary.apps)."""

from __future__ import annotations

from django.dispatch import receiver

from canary.sync import preview_rows
from ingest.processing import dry_run_preview


@receiver(dry_run_preview, dispatch_uid="canary.preview_rows")
def preview(sender: object, metric_ids: list[int], **kwargs: object) -> dict[str, list[list]]:
    """A dry run (``replay_birth --dry-run``) asks what Canary would receive for the metrics it changed."""
    return preview_rows(metric_ids)
