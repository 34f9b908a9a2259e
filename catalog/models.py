"""The metadata catalog: PostgreSQL schema ``uns_meta`` (docs/catalog.md).

Database rules that Django cannot express live in the migrations as SQL and are
named here so a reader knows they exist:
- ``metric_properties``: PRIMARY KEY (metric_id, key); ``id`` is only a unique
  handle for the admin. CHECK ``metric_properties_one_typed_value``: exactly the
  column of the row's ``type`` is set, all NULL only when ``is_null``.
- ``updated_at`` is maintained and ``created_at`` frozen by triggers.
- ``metric_versions`` refuses UPDATE and DELETE (append-only).
- publication ``uns_meta_pub`` covers exactly ``metrics`` and ``metric_properties``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Now, Replace

from catalog.fields import PropertyTypeField, RealField
from sparkplug.datatypes import DataType

DATATYPE_CHOICES = [(t.value, t.name) for t in DataType]


class PropertyType(models.TextChoices):
    """Storage type of a property value; one typed column each (docs/catalog.md)."""

    INT = "int"
    LONG = "long"
    FLOAT = "float"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    STRING = "string"
    DATETIME = "datetime"
    JSON = "json"


class Timestamped(models.Model):
    # db_default: rows written by COPY get them too; the trigger keeps them honest.
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        abstract = True


class Device(Timestamped):
    """A Sparkplug device: identity ``(group_id, edge, device)``."""

    group_id = models.TextField()
    edge = models.TextField()
    device = models.TextField()
    uns_path = models.TextField(unique=True)
    country = models.TextField(null=True, blank=True)
    business_unit = models.TextField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."devices'
        constraints = [
            models.UniqueConstraint(fields=["group_id", "edge", "device"], name="devices_identity_uniq"),
        ]
        ordering = ["uns_path"]

    def __str__(self) -> str:
        return self.uns_path


class Metric(Timestamped):
    """A tag of a device: identity ``(device, name)``; never deleted, only retired."""

    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="metrics")
    name = models.TextField()
    uns_path = models.TextField(unique=True)
    canary_id = models.GeneratedField(
        expression=Replace(F("uns_path"), Value("/"), Value(".")),
        output_field=models.TextField(),
        db_persist=True,
    )
    datatype = models.SmallIntegerField(choices=DATATYPE_CHOICES)
    # Last alias the edge announced (valid for one session only, never an identity);
    # also the persisted alias cache used to resolve nameless metrics.
    alias = models.BigIntegerField(null=True, blank=True)
    plant = models.TextField(null=True, blank=True)
    # Value-free definition fingerprint (name, datatype, properties): an unchanged
    # metric in a re-birth costs no write.
    fingerprint = models.BinaryField(editable=False)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."metrics'
        constraints = [
            models.UniqueConstraint(fields=["device", "name"], name="metrics_identity_uniq"),
        ]
        indexes = [
            models.Index(fields=["canary_id"], name="metrics_canary_id_idx"),
            models.Index(fields=["device", "alias"], name="metrics_device_alias_idx"),
            models.Index(fields=["plant"], name="metrics_plant_idx"),
        ]
        ordering = ["uns_path"]

    def __str__(self) -> str:
        return self.uns_path


class TypedValue(models.Model):
    """One typed column per property type; a CHECK enforces exactly one is set."""

    type = PropertyTypeField(choices=PropertyType.choices)
    is_null = models.BooleanField(default=False)
    int_value = models.IntegerField(null=True, blank=True)
    # numeric(20,0) holds every Int64 and every UInt64 without alteration.
    long_value = models.DecimalField(max_digits=20, decimal_places=0, null=True, blank=True)
    float_value = RealField(null=True, blank=True)
    double_value = models.FloatField(null=True, blank=True)
    boolean_value = models.BooleanField(null=True, blank=True)
    string_value = models.TextField(null=True, blank=True)
    datetime_value = models.DateTimeField(null=True, blank=True)
    json_value = models.JSONField(null=True, blank=True)

    class Meta:
        abstract = True

    VALUE_COLUMNS = {
        PropertyType.INT: "int_value",
        PropertyType.LONG: "long_value",
        PropertyType.FLOAT: "float_value",
        PropertyType.DOUBLE: "double_value",
        PropertyType.BOOLEAN: "boolean_value",
        PropertyType.STRING: "string_value",
        PropertyType.DATETIME: "datetime_value",
        PropertyType.JSON: "json_value",
    }

    @property
    def value(self) -> object:
        if self.is_null:
            return None
        return getattr(self, self.VALUE_COLUMNS[PropertyType(self.type)])


class MetricProperty(Timestamped, TypedValue):
    """A property as the edge sent it in the last applied birth (key kept verbatim)."""

    # No separate index: the primary key (metric_id, key) serves metric_id lookups.
    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="properties", db_index=False)
    key = models.TextField()
    # Sparkplug type code as received (e.g. Int32 vs UInt16 both store as int).
    sparkplug_type = models.SmallIntegerField(choices=DATATYPE_CHOICES)

    class Meta:
        db_table = 'uns_meta"."metric_properties'
        ordering = ["metric", "key"]
        verbose_name_plural = "metric properties"

    def __str__(self) -> str:
        return self.key


class PropertyOverride(Timestamped, TypedValue):
    """A steward's correction, kept beside the edge value; a later birth never clobbers it."""

    metric = models.ForeignKey(Metric, on_delete=models.CASCADE, related_name="overrides")
    key = models.TextField()
    note = models.TextField(blank=True, default="")
    updated_by = models.TextField(editable=False, default="")
    # Set by a trigger on every write (migration 0006): what a later birth is compared with (catalog.review).
    edge_seen = models.JSONField(editable=False, null=True,
                                 help_text="the edge's type and value when the override was last set or kept")

    class Meta:
        db_table = 'uns_meta"."property_overrides'
        constraints = [
            models.UniqueConstraint(fields=["metric", "key"], name="property_overrides_uniq"),
        ]
        ordering = ["metric", "key"]

    def __str__(self) -> str:
        return self.key


class MetricVersion(models.Model):
    """Append-only history of definition changes (the database refuses UPDATE/DELETE)."""

    class Kind(models.TextChoices):
        CREATED = "created"
        CHANGED = "changed"
        RENAMED = "renamed"
        RETIRED = "retired"
        RESTORED = "restored"
        STEWARD = "steward"

    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="versions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Key-level diff: {"added": {k: v}, "changed": {k: [old, new]}, "removed": {k: v},
    # "name"/"uns_path"/"datatype": [old, new]}
    change = models.JSONField()
    changed_by = models.TextField()  # "birth:<frame id>" or "steward:<username>"
    changed_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = 'uns_meta"."metric_versions'
        ordering = ["-id"]
        indexes = [models.Index(fields=["metric", "-id"], name="metric_versions_metric_idx")]

    def __str__(self) -> str:
        return f"{self.kind} by {self.changed_by}"


class MetricPathLineage(models.Model):
    """Every change of a metric's ``uns_path``; the metric keeps its id."""

    metric = models.ForeignKey(Metric, on_delete=models.PROTECT, related_name="lineage")
    old_path = models.TextField()
    new_path = models.TextField()
    reason = models.TextField()
    changed_by = models.TextField()
    changed_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = 'uns_meta"."metric_path_lineage'
        constraints = [
            models.UniqueConstraint(fields=["metric", "old_path", "new_path"], name="lineage_uniq"),
        ]
        ordering = ["-changed_at"]
        verbose_name_plural = "metric path lineage"

    def __str__(self) -> str:
        return f"{self.old_path} → {self.new_path}"
