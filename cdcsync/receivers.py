"""What cdcsync does when the catalog says metrics need a sync outside replication (catalog.signals)."""

from __future__ import annotations

from django.dispatch import receiver

from catalog.signals import metrics_need_sync
from cdcsync.pending import mark_now


@receiver(metrics_need_sync)
def mark_metrics_pending(sender: object, *, metric_ids: list[int], reason: str, **kwargs: object) -> None:
    """Due at once: a steward waits for the edit to reach Canary, no debounce needed."""
    mark_now(metric_ids, reason=reason)
