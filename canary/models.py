"""What Canary should receive and what it acknowledged (docs/catalog.md)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce, Now, NullIf


class PropertyMapping(models.Model):
    """Sparkplug key → Canary property name, or excluded. Keys without a row go verbatim."""

    key = models.TextField(unique=True, help_text="Sparkplug property key, case kept")
    canary_name = models.TextField(blank=True, default="", help_text="empty: the key itself")
    include = models.BooleanField(default=True)
    note = models.TextField(blank=True, default="")

    class Meta:
        db_table = 'uns_meta"."canary_property_map'
        ordering = ["key"]
        constraints = [
            # Two keys sent under one Canary name would overwrite each other.
            models.UniqueConstraint(Coalesce(NullIf("canary_name", Value("")), "key"), condition=Q(include=True),
                                    name="canary_property_map_one_key_per_name",
                                    violation_error_message="another included key is already sent under this "
                                                            "Canary name"),
        ]

    def __str__(self) -> str:
        return f"{self.key} → {self.canary_name or self.key}" if self.include else f"{self.key} (excluded)"

    def clean(self) -> None:
        """A form error, not a database error, when the name is taken (the constraint is the guard)."""
        if not self.include:
            return
        name = self.canary_name or self.key
        holder = (PropertyMapping.objects.filter(include=True).exclude(pk=self.pk)
                  .annotate(target=Coalesce(NullIf("canary_name", Value("")), "key", output_field=models.TextField()))
                  .filter(target=name).first())
        if holder is not None:
            raise ValidationError({"canary_name": f"{holder.key!r} is already sent under the Canary name {name!r}: "
                                                  "another included key is already sent under this Canary name"})


class SyncState(models.Model):
    """What Canary last acknowledged for a metric: its tag and mapped properties. A key sent by a
    batch that then failed or was refused holds ``{"unconfirmed": batch id}`` (Canary may have
    applied it); ``acked_at`` is NULL while nothing under this tag was ever acknowledged."""

    metric_id = models.BigIntegerField(primary_key=True)
    canary_id = models.TextField()
    properties = models.JSONField(default=dict)  # canary name -> value as sent (or the unconfirmed marker)
    acked_at = models.DateTimeField(null=True, db_default=Now())
    batch_id = models.BigIntegerField(null=True)

    class Meta:
        db_table = 'uns_meta"."canary_sync_state'
        verbose_name = "Canary sync state"

    def __str__(self) -> str:
        return self.canary_id


class PushBatch(models.Model):
    """One storeData request: up to CANARY_BATCH_TAGS tags and CANARY_BATCH_MAX_BYTES."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        SENDING = "sending"
        ACKED = "acked"
        FAILED = "failed"  # retries exhausted or circuit open: metrics went back to pending
        REJECTED = "rejected"  # Canary refused this one-tag batch: its metric is quarantined
        SPLIT = "split"  # Canary refused it: its tags went on in two child batches (parent_id)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    attempts = models.IntegerField(default=0)
    tags = models.IntegerField()
    size = models.IntegerField()
    # storeData "properties" object as JSON text (sent as it is, never parsed again):
    # tag path -> [[name, timestamp, value, quality], ...]
    body = models.TextField()
    # metric id -> {"canary_id", "properties"}: the sync state once Canary says Good
    targets = models.JSONField()
    error = models.TextField(blank=True, default="")
    task_id = models.TextField(blank=True, default="")
    # The batch this one is half of (that one was refused by Canary and split); no database
    # constraint: an ended batch is pruned on its own schedule.
    parent_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."canary_push_batches'
        verbose_name_plural = "push batches"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"batch {self.pk} ({self.tags} tags, {self.status})"


class InFlight(models.Model):
    """A metric with an unacknowledged batch: the flush leaves it pending until that ends."""

    metric_id = models.BigIntegerField(primary_key=True)
    # No database constraint: the row is always written in the transaction that writes its batch,
    # and a deferred foreign-key check per row cost a third of the flush's insert time.
    batch = models.ForeignKey(PushBatch, on_delete=models.CASCADE, related_name="inflight", db_constraint=False)

    class Meta:
        db_table = 'uns_meta"."canary_inflight'


class Quarantine(models.Model):
    """A metric whose change Canary refused on its own (a one-tag batch): not retried blindly.
    It is pushed again when its metadata changes or a steward asks
    (:func:`canary.quarantine.release`); the acknowledgement of that push deletes the row."""

    metric_id = models.BigIntegerField(primary_key=True)
    canary_id = models.TextField()
    reason = models.TextField(help_text="Canary's error messages")
    batch_id = models.BigIntegerField(null=True, help_text="the one-tag batch Canary refused last")
    quarantined_at = models.DateTimeField(db_default=Now())
    attempts = models.IntegerField(default=1, help_text="refusals in a row")

    class Meta:
        db_table = 'uns_meta"."canary_quarantine'
        verbose_name = "quarantined tag"
        ordering = ["-quarantined_at"]
        permissions = [("release_quarantine", "Can push quarantined tags again")]

    def __str__(self) -> str:
        return self.canary_id


class MappingChange(models.Model):
    """Audit of the property mapping: who changed which key's Canary name or inclusion, when, from what."""

    key = models.TextField()
    action = models.CharField(max_length=16)  # added, changed, removed
    before = models.JSONField(null=True)  # {"canary_name", "include", "note"}; None when added
    after = models.JSONField(null=True)  # None when removed
    changed_by = models.TextField()  # "steward:<username>"
    changed_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = 'uns_meta"."canary_property_map_changes'
        ordering = ["-id"]
        verbose_name = "property mapping change"

    def __str__(self) -> str:
        return f"{self.key} {self.action} by {self.changed_by}"
