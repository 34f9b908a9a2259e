"""The birth ledger: every frame ingest received, stored before anything else happens."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class BirthFrame(models.Model):
    """One MQTT frame as received (claim check: only its id travels through Redis)."""

    class Status(models.TextChoices):
        RECEIVED = "received"
        APPLIED = "applied"
        DUPLICATE = "duplicate"
        STALE = "stale"
        REJECTED = "rejected"  # the frame is invalid: the reason says why, it is never retried
        FAILED = "failed"  # applying it raised on every one of BIRTH_MAX_ATTEMPTS attempts

    topic = models.TextField()
    payload = models.BinaryField()
    size = models.IntegerField()
    sha256 = models.BinaryField()
    received_at = models.DateTimeField(db_default=Now())
    # Sparkplug payload timestamp (ms since epoch); orders births of one device.
    payload_ts = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    reason = models.TextField(blank=True, default="")
    # {"new", "changed", "unchanged", "retired", "restored", "renamed", "rejected"}
    counts = models.JSONField(null=True, blank=True)
    device = models.ForeignKey("catalog.Device", null=True, blank=True, on_delete=models.SET_NULL)
    # Attempts to process it, counted as each starts (a worker killed mid-apply counts too), and
    # those that ended in an unexpected error (the reason holds the last one).
    attempts = models.IntegerField(default=0)
    failures = models.IntegerField(db_default=0)
    # Set while a failed attempt waits for its retry: beat's stuck-frame requeue leaves it alone till then.
    retry_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    apply_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."birth_frames'
        indexes = [
            models.Index(fields=["topic", "-payload_ts"], name="birth_frames_topic_ts_idx",
                         condition=models.Q(status="applied")),
            models.Index(fields=["received_at"], name="birth_frames_pending_idx",
                         condition=models.Q(status="received")),
            models.Index(fields=["-received_at"], name="birth_frames_received_idx"),
        ]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic}"
