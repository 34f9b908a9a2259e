"""Database-enforced rules of the catalog schema (DI-01…DI-05, TC-15)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

from builders import device, metric
from catalog.models import Device, Metric, MetricPathLineage, MetricVersion

pytestmark = pytest.mark.django_db


def _sql(query: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(query, params or [])
        return cur.fetchall() if cur.description else []


def test_device_identity_and_path_are_unique():
    """DI-01: devices are unique by (group_id, edge, device) and by uns_path."""
    device("Secil", "Portugal", "Cement")
    with pytest.raises(IntegrityError), transaction.atomic():
        Device.objects.create(group_id="Secil", edge="Portugal", device="Cement", uns_path="other/path")
    with pytest.raises(IntegrityError), transaction.atomic():
        Device.objects.create(group_id="Secil", edge="Brazil", device="Cement", uns_path="Secil/Portugal/Cement")


def test_metric_identity_and_path_are_unique():
    """DI-01: metrics are unique by (device_id, name) and by uns_path."""
    dev = device()
    metric(dev, "A/B")
    with pytest.raises(IntegrityError), transaction.atomic():
        Metric.objects.create(device=dev, name="A/B", uns_path="x/y", datatype=11, fingerprint=b"")
    with pytest.raises(IntegrityError), transaction.atomic():
        Metric.objects.create(device=dev, name="A B", uns_path=f"{dev.uns_path}/A/B", datatype=11, fingerprint=b"")


def test_canary_id_is_generated_on_insert_and_update():
    """DI-02: canary_id = replace(uns_path, '/', '.') maintained by the database."""
    m = metric(name="Maceira/400_-_Clinker/KPI")
    m.refresh_from_db()
    assert m.canary_id == m.uns_path.replace("/", ".")
    Metric.objects.filter(pk=m.pk).update(uns_path="Secil/Portugal/Cement/Outão/New")
    m.refresh_from_db()
    assert m.canary_id == "Secil.Portugal.Cement.Outão.New"
    with pytest.raises(DatabaseError), transaction.atomic():
        _sql("UPDATE uns_meta.metrics SET canary_id = 'forged' WHERE id = %s", [m.pk])


@pytest.mark.django_db(transaction=True)
def test_updated_at_trigger_fires_and_created_at_is_frozen():
    """DI-03: updated_at follows every update (trigger); created_at never changes."""
    m = metric()
    (created, updated), = _sql("SELECT created_at, updated_at FROM uns_meta.metrics WHERE id = %s", [m.pk])
    _sql("UPDATE uns_meta.metrics SET alias = 7, created_at = '2000-01-01' WHERE id = %s", [m.pk])
    (created2, updated2), = _sql("SELECT created_at, updated_at FROM uns_meta.metrics WHERE id = %s", [m.pk])
    assert created2 == created
    assert updated2 > updated


INSERT_PROP = (
    "INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null,"
    " int_value, long_value, string_value) VALUES (%s, %s, 3, %s, %s, %s, %s, %s)"
)


@pytest.mark.parametrize(
    ("kind", "is_null", "int_value", "long_value", "string_value", "accepted"),
    [
        ("int", False, 5, None, None, True),
        ("long", False, None, 18446744073709551615, None, True),  # UInt64 max kept exactly
        ("string", True, None, None, None, True),  # Sparkplug is_null
        ("int", False, None, None, None, False),  # zero columns set
        ("int", False, 5, 5, None, False),  # two columns set
        ("string", False, 5, None, None, False),  # the column of another type
        ("int", True, 5, None, None, False),  # is_null with a value
        ("long", False, None, 18446744073709551616, None, False),  # beyond UInt64
    ],
)
def test_typed_value_check(kind, is_null, int_value, long_value, string_value, accepted):
    """DI-04: exactly the column of the row's type is set (all NULL only for is_null)."""
    m = metric()
    params = [m.pk, "k", kind, is_null, int_value, long_value, string_value]
    if accepted:
        _sql(INSERT_PROP, params)
    else:
        with pytest.raises(IntegrityError), transaction.atomic():
            _sql(INSERT_PROP, params)


def test_property_type_is_a_strict_enum():
    """DI-04: the type column refuses anything outside the enum."""
    m = metric()
    with pytest.raises(DatabaseError), transaction.atomic():
        _sql(INSERT_PROP, [m.pk, "k", "integer", False, 5, None, None])


def test_lineage_unique_per_metric_old_new():
    """DI-05: lineage is unique per (metric_id, old_path, new_path)."""
    m = metric()
    MetricPathLineage.objects.create(metric=m, old_path="a", new_path="b", reason="r", changed_by="t")
    MetricPathLineage.objects.create(metric=m, old_path="b", new_path="a", reason="r", changed_by="t")
    with pytest.raises(IntegrityError), transaction.atomic():
        MetricPathLineage.objects.create(metric=m, old_path="a", new_path="b", reason="r", changed_by="t")


def test_versions_are_append_only():
    """DI-05: UPDATE and DELETE on metric_versions are refused by the database."""
    m = metric()
    v = MetricVersion.objects.create(metric=m, kind="changed", change={"added": {"k": 1}}, changed_by="birth:1")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        MetricVersion.objects.filter(pk=v.pk).update(changed_by="someone else")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("DELETE FROM uns_meta.metric_versions WHERE id = %s", [v.pk])
    assert MetricVersion.objects.get(pk=v.pk).changed_by == "birth:1"


def test_publication_covers_exactly_metrics_and_properties():
    """TC-15: uns_meta_pub publishes exactly uns_meta.metrics and uns_meta.metric_properties."""
    rows = _sql("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'uns_meta_pub'")
    assert sorted(rows) == [("uns_meta", "metric_properties"), ("uns_meta", "metrics")]
    (pubtruncate, pubdelete), = _sql(
        "SELECT pubtruncate, pubdelete FROM pg_publication WHERE pubname = 'uns_meta_pub'")
    assert pubdelete and pubtruncate


def test_metric_properties_primary_key_is_metric_and_key():
    """docs/catalog.md: PRIMARY KEY (metric_id, key) — also CDC's replica identity on DELETE."""
    cols = _sql(
        "SELECT a.attname FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = 'uns_meta.metric_properties'::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)"
    )
    assert [c for (c,) in cols] == ["metric_id", "key"]


def test_tables_live_in_uns_meta_schema():
    """docs/catalog.md: the catalog tables are in schema uns_meta, created by migrations."""
    tables = {t for (t,) in _sql("SELECT tablename FROM pg_tables WHERE schemaname = 'uns_meta'")}
    assert {"devices", "metrics", "metric_properties", "metric_versions", "metric_path_lineage",
            "birth_frames", "property_overrides"} <= tables


@pytest.mark.django_db
def test_in_flight_rows_carry_no_foreign_key():
    """docs/architecture.md: canary_inflight rows are written with their batch; a deferred foreign
    key check per row cost a third of the flush's insert time, so the table has none (migration
    canary 0007; 0004 meant to drop it but Django does not see constraints of schema tables)."""
    with connection.cursor() as cur:
        cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'uns_meta.canary_inflight'::regclass"
                    " AND contype = 'f'")
        assert cur.fetchall() == []
