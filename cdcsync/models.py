"""Durable pending work: one row per metric whose catalog rows changed (docs/cdc.md)."""

from __future__ import annotations

from django.db import models


class PendingSync(models.Model):
    """A metric to diff against Canary once ``due_at`` passes (trailing debounce with a cap).

    Written by ``cdc_consume`` (and by steward edits); consumed by the flush. No
    foreign key: the consumer must never block on a metric it cannot see.
    """

    metric_id = models.BigIntegerField(primary_key=True)
    first_change_at = models.DateTimeField()
    last_change_at = models.DateTimeField()
    due_at = models.DateTimeField(db_index=True)
    changes = models.IntegerField(default=1)
    reason = models.CharField(max_length=32, default="cdc")

    class Meta:
        db_table = 'uns_meta"."sync_pending'
        verbose_name = "pending sync"
        ordering = ["due_at"]

    def __str__(self) -> str:
        return f"metric {self.metric_id} due {self.due_at:%H:%M:%S}"
