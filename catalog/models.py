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

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Now, Replace, Upper

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

    # No index of its own: the (device, ...) indexes below serve device lookups.
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="metrics", db_index=False)
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
            # The admin at 10^6 metrics (docs/admin-scale.md): the search's UPPER(x) LIKE UPPER('%s%')
            # uses trigram indexes; the plant/device filters read their first page in path order; the
            # devices of a plant are found by one probe each.
            *(GinIndex(OpClass(Upper(column), name="gin_trgm_ops"), name=f"metrics_{column}_trgm")
              for column in ("uns_path", "name", "canary_id")),
            models.Index(fields=["plant", "uns_path"], name="metrics_plant_path_idx"),
            models.Index(fields=["device", "uns_path"], name="metrics_device_path_idx"),
            models.Index(fields=["device", "plant"], name="metrics_device_plant_idx"),
            models.Index(fields=["uns_path"], condition=Q(retired_at__isnull=False), name="metrics_retired_path_idx"),
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


class VersionKey(models.Model):
    """One key of one version: a read-only view over ``MetricVersion.change`` (catalog 0008), so the
    history lists, filters and pages key-level rows ("engUnit: °C → bar") like any table."""

    id = models.TextField(primary_key=True)  # "<version id>:<part>:<key>"
    version = models.ForeignKey(MetricVersion, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    metric = models.ForeignKey(Metric, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    kind = models.CharField(max_length=16, choices=MetricVersion.Kind.choices)
    changed_by = models.TextField()
    changed_at = models.DateTimeField()
    part = models.TextField()  # added / changed / removed / override_* / name / uns_path / datatype
    key = models.TextField()
    old = models.JSONField(null=True)
    new = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = 'uns_meta"."metric_version_keys'
        ordering = ["-version", "id"]

    def __str__(self) -> str:
        return f"{self.key}: {self.old} → {self.new}"


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


class BulkChange(models.Model):
    """One steward's correction of many metrics at once (docs/steward-bulk.md): who, when, why,
    how many; each metric it changed also has its own version, whose change names this row."""

    class Action(models.TextChoices):
        SET = "set"
        CLEAR = "clear"
        IMPORT = "import"

    action = models.CharField(max_length=16, choices=Action.choices)
    key = models.TextField(blank=True, default="")  # empty for an import (many keys)
    value = models.JSONField(null=True, blank=True)  # {"type": ..., "value": ...} of a set
    selection = models.TextField(blank=True, default="")  # the filter, as the list's query string
    why = models.TextField()
    metrics = models.IntegerField(default=0)  # metrics whose overrides changed
    changed_by = models.TextField()
    changed_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = 'uns_meta"."bulk_changes'
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.key} on {self.metrics} metrics by {self.changed_by}"


class StagedImport(models.Model):
    """An uploaded override sheet between its dry run and the steward's confirmation (docs/steward-bulk.md)."""

    filename = models.TextField()
    rows = models.JSONField()  # the sheet's rows as read: [{column: text}]
    uploaded_by = models.TextField()
    uploaded_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = 'uns_meta"."staged_imports'

    def __str__(self) -> str:
        return self.filename


class NodeState(models.Model):
    """Lifecycle of a Sparkplug edge node, from its NBIRTH/NDEATH (docs/sparkplug.md, "Lifecycle").

    ``bd_seq`` is the NBIRTH's birth/death sequence number: only an NDEATH carrying the same value
    ends this session (an older session's death arrives late after a reconnect)."""

    group_id = models.TextField()
    edge = models.TextField()
    online = models.BooleanField(default=False)
    bd_seq = models.BigIntegerField(null=True, blank=True)
    # bdSeq of an NDEATH that arrived before its NBIRTH (replicas can reorder them): that birth
    # then leaves the node offline.
    early_death_bd_seq = models.BigIntegerField(null=True, blank=True)
    last_birth_at = models.DateTimeField(null=True, blank=True)
    last_death_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."node_states'
        constraints = [models.UniqueConstraint(fields=["group_id", "edge"], name="node_states_identity_uniq")]
        ordering = ["group_id", "edge"]

    def __str__(self) -> str:
        return f"{self.group_id}/{self.edge}"


class DeviceState(models.Model):
    """Lifecycle of a Sparkplug device, from its DBIRTH/DDEATH and its node's NDEATH; keyed by the
    topic ids (a device is online before its first birth is applied to the catalog)."""

    group_id = models.TextField()
    edge = models.TextField()
    device = models.TextField()
    online = models.BooleanField(default=False)
    last_birth_at = models.DateTimeField(null=True, blank=True)
    last_death_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = 'uns_meta"."device_states'
        constraints = [
            models.UniqueConstraint(fields=["group_id", "edge", "device"], name="device_states_identity_uniq"),
        ]
        ordering = ["group_id", "edge", "device"]

    def __str__(self) -> str:
        return f"{self.group_id}/{self.edge}/{self.device}"
