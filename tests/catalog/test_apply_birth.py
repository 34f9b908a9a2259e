"""Applying DBIRTH frames to the catalog (TC-03…TC-07, TC-11, TC-13, TC-14)."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from births import birth, m, prod, receive, topic
from catalog import propvalues
from catalog.models import Device, Metric, MetricPathLineage, MetricProperty, MetricVersion
from ingest.ledger import store_frame
from ingest.models import BirthFrame
from ingest.processing import process_frame
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db

CATALOG_TABLES = ("devices", "metrics", "metric_properties", "metric_versions")


def writes() -> dict[str, int]:
    """Rows inserted/updated/deleted so far in this transaction, per catalog table."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'uns_meta' AND relname = ANY(%s)", [list(CATALOG_TABLES)])
        return dict(cur.fetchall())


def props_of(metric: Metric) -> dict[str, object]:
    return {p.key: p.value for p in metric.properties.all()}


def test_first_birth_creates_device_metrics_properties_and_versions():
    """TC-03: a birth becomes one device, its metrics, their properties, one 'created' version each."""
    t = topic()
    outcome = receive(t, birth(prod("Maceira/Kiln/Temp", alias=1), prod("Maceira/Kiln/Speed", alias=2)))
    assert outcome.status == "applied"
    assert outcome.counts["new"] == 2 and outcome.counts["versions"] == 2
    device = Device.objects.get(pk=outcome.device_id)
    assert device.edge == "Portugal" and device.country == "Portugal" and device.business_unit == "Cement"
    metric = Metric.objects.get(device=device, name="Maceira/Kiln/Temp")
    assert metric.uns_path == f"{device.uns_path}/Maceira/Kiln/Temp"
    assert metric.plant == "Maceira" and metric.alias == 1 and metric.retired_at is None
    assert len(props_of(metric)) == 10
    assert metric.versions.get().kind == "created"
    frame = BirthFrame.objects.get(pk=outcome.frame_id)
    assert frame.status == "applied" and frame.counts["new"] == 2 and frame.device_id == device.pk


def test_identical_rebirth_writes_no_rows():
    """TC-03 / TC-11: a re-birth with new values and timestamps but the same metadata writes nothing."""
    t = topic()
    receive(t, birth(prod("A/x", alias=1, documentation=(T.String, "doc")), prod("A/y", alias=2)))
    before = writes()
    outcome = receive(t, birth(m("A/x", alias=1, value=False, documentation=(T.String, "doc"),
                                 **{k: v for k, v in prod("A/x").properties.items() if k != "documentation"}),
                               prod("A/y", alias=2)))
    assert outcome.status == "applied"
    assert outcome.counts["unchanged"] == 2 and outcome.counts["versions"] == 0
    assert writes() == before


def test_same_bytes_again_is_a_duplicate():
    """TC-11: the same frame delivered again is marked duplicate and changes nothing."""
    t = topic()
    payload = birth(prod("A/x"))
    assert receive(t, payload).status == "applied"
    before = writes()
    for _ in range(5):
        outcome = receive(t, payload)
        assert outcome.status == "duplicate"
        assert "same bytes" in outcome.reason
    assert writes() == before
    assert Metric.objects.filter(device__device="Cement", name="A/x", device__group_id=t.split("/")[1]).count() == 1


def test_retried_task_for_processed_frame_is_harmless():
    """TC-03: processing the same ledger frame twice (task retry) is a no-op."""
    t = topic()
    frame_id = store_frame(t, birth(prod("A/x")))
    assert process_frame(frame_id).status == "applied"
    before = writes()
    again = process_frame(frame_id)
    assert (again.status, again.reason) == ("applied", "already processed")
    assert writes() == before


def test_older_frame_is_stale_and_not_applied():
    """docs/architecture.md: a frame older than the last applied one of its device is stale."""
    t = topic()
    receive(t, birth(prod("A/x"), ts=2_000_000))
    outcome = receive(t, birth(prod("A/x", documentation=(T.String, "older")), ts=1_000_000))
    assert outcome.status == "stale" and "older" in outcome.reason
    assert props_of(Metric.objects.get(name="A/x", device__group_id=t.split("/")[1]))["documentation"] == "SA: - Active"


ALL_TYPES = {
    "i8": (T.Int8, -5), "i16": (T.Int16, -300), "i32": (T.Int32, -5), "quality": (T.Int32, 2147484164 - 2**32),
    "u8": (T.UInt8, 200), "u16": (T.UInt16, 60000), "u32": (T.UInt32, 4_000_000_000),
    "i64": (T.Int64, -9_000_000_000_000_000_000), "u64": (T.UInt64, 2**64 - 1),
    "f": (T.Float, propvalues.f32(0.1)), "d": (T.Double, 1e300), "b": (T.Boolean, False),
    "s": (T.String, "Outão °C"), "text": (T.Text, "long\ntext"), "uuid": (T.UUID, "0b4e…"),
    "dt": (T.DateTime, 1_756_392_554_609), "null": (T.String, None),
    "set": (T.PropertySet, {"inner": {"type": "Int32", "value": -1}, "deeper": {"type": "PropertySet", "value": {
        "x": {"type": "UInt64", "value": 2**64 - 1}}}}),
    "list": (T.PropertySetList, [{"a": {"type": "String", "value": "v"}}, {}]),
}
EXPECTED_COLUMN = {
    "i8": ("int", -5), "i16": ("int", -300), "i32": ("int", -5), "quality": ("int", -2147483132),
    "u8": ("int", 200), "u16": ("int", 60000), "u32": ("long", Decimal(4_000_000_000)),
    "i64": ("long", Decimal(-9_000_000_000_000_000_000)), "u64": ("long", Decimal(2**64 - 1)),
    "b": ("boolean", False), "s": ("string", "Outão °C"), "text": ("string", "long\ntext"),
    "uuid": ("string", "0b4e…"),
}


def test_every_property_type_is_stored_in_its_typed_column_and_round_trips():
    """TC-04: every Sparkplug property type lands in its typed column and reads back equal."""
    t = topic()
    outcome = receive(t, birth(m("Plant/all_types", T.Int32, value=1, **ALL_TYPES)))
    assert outcome.status == "applied", outcome.reason
    rows = {p.key: p for p in MetricProperty.objects.filter(metric__device_id=outcome.device_id)}
    assert set(rows) == set(ALL_TYPES)
    for key, (kind, value) in EXPECTED_COLUMN.items():
        row = rows[key]
        assert (row.type, row.value) == (kind, value), key
        assert row.sparkplug_type == ALL_TYPES[key][0]
    assert rows["null"].is_null and rows["null"].value is None and rows["null"].type == "string"
    assert rows["f"].type == "float" and rows["d"].type == "double" and rows["dt"].type == "datetime"
    assert rows["set"].type == "json" and rows["set"].value == ALL_TYPES["set"][1]
    for key, row in rows.items():  # stored -> decoded form equals what was sent
        stored = propvalues.from_row(row.sparkplug_type, row.type, row.is_null,
                                     tuple(getattr(row, c) for c in propvalues.VALUE_COLUMNS))
        assert stored == ALL_TYPES[key], key


def test_nameless_metric_resolved_from_device_then_node_alias_cache():
    """TC-05: a metric without a name is resolved by alias: device scope first, then node scope."""
    t = topic("Cement")
    receive(t, birth(prod("Plant/known", alias=7)))
    outcome = receive(t, birth(m(None, alias=7, **prod("x").properties)))
    assert outcome.status == "applied" and outcome.counts["unchanged"] == 1 and outcome.counts["new"] == 0
    sibling = t.rsplit("/", 1)[0] + "/Packing"  # same group and edge node, another device
    outcome = receive(sibling, birth(m(None, alias=7, **prod("x").properties)))
    assert outcome.status == "applied"
    assert Metric.objects.get(device_id=outcome.device_id).name == "Plant/known"


def test_unresolved_alias_is_rejected_by_name_and_requests_one_rebirth(settings, monkeypatch,
                                                                         django_capture_on_commit_callbacks):
    """TC-05: a nameless metric whose alias nothing resolves is not stored under a made-up name (it
    would become a catalog metric and a Canary tag): it is rejected with the reason, the rest of the
    birth applies, and the edge node is asked for a (throttled) rebirth with names. A birth of only
    such metrics is rejected, and asks for the rebirth too."""
    requested: list[tuple[str, str]] = []
    monkeypatch.setattr("ingest.processing.request_rebirth", lambda g, e: requested.append((g, e)))
    settings.REBIRTH_REQUESTS_ENABLED = True
    t = topic()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = receive(t, birth(prod("Plant/named", alias=1), m(None, alias=42, value=True)))
    assert outcome.status == "applied" and outcome.counts["new"] == 1 and outcome.counts["rejected"] == 1
    assert "alias 42 has no name" in outcome.reason and "1 alias(es) unresolved" in outcome.reason
    assert list(Metric.objects.filter(device_id=outcome.device_id).values_list("name", flat=True)) == ["Plant/named"]
    assert requested == [(t.split("/")[1], "Portugal")]

    alone = topic()
    outcome = receive(alone, birth(m(None, alias=43, value=True)))
    assert outcome.status == "rejected" and "alias 43 has no name" in outcome.reason
    assert requested[-1] == (alone.split("/")[1], "Portugal")


def test_rename_by_alias_keeps_identity_and_writes_lineage():
    """TC-06 / TC-13: a name gone and a new name with the same alias and datatype is a rename."""
    t = topic()
    first = receive(t, birth(prod("Plant/Old name", alias=5), prod("Plant/other", alias=6)))
    old = Metric.objects.get(device_id=first.device_id, name="Plant/Old name")
    outcome = receive(t, birth(prod("Plant/New name", alias=5), prod("Plant/other", alias=6)))
    assert outcome.counts["renamed"] == 1 and outcome.counts["new"] == 0 and outcome.counts["retired"] == 0
    renamed = Metric.objects.get(pk=old.pk)
    assert renamed.name == "Plant/New name"
    assert renamed.uns_path.endswith("/Plant/New_name") and renamed.canary_id.endswith(".Plant.New_name")
    lineage = MetricPathLineage.objects.get(metric=renamed)
    assert (lineage.old_path, lineage.new_path) == (old.uns_path, renamed.uns_path)
    assert lineage.changed_by == f"birth:{outcome.frame_id}"
    version = renamed.versions.first()
    assert version.kind == "renamed" and version.change["name"] == ["Plant/Old name", "Plant/New name"]


def test_versions_record_a_key_level_diff_and_are_only_appended():
    """TC-07: each definition change appends one version with added/changed/removed keys."""
    t = topic()
    first = receive(t, birth(m("P/x", T.Float, value=1.5, engUnit=(T.String, "°C"), engHigh=(T.Double, 100.0),
                               gone=(T.Int32, 1))))
    metric = Metric.objects.get(device_id=first.device_id)
    created = metric.versions.get()
    second = receive(t, birth(m("P/x", T.Float, value=2.5, engUnit=(T.String, "K"), engHigh=(T.Double, 100.0),
                                fresh=(T.Int32, 2))))
    assert second.counts["changed"] == 1
    change = metric.versions.exclude(pk=created.pk).get()
    assert change.kind == "changed" and change.changed_by == f"birth:{second.frame_id}"
    assert change.change == {"changed": {"engUnit": ["°C", "K"]}, "added": {"fresh": 2}, "removed": {"gone": 1}}
    third = receive(t, birth(m("P/x", T.Double, value=2.5, engUnit=(T.String, "K"), engHigh=(T.Double, 100.0),
                               fresh=(T.Int32, 2))))
    latest = metric.versions.first()
    assert latest.change == {"datatype": [T.Float, T.Double]} and latest.changed_by == f"birth:{third.frame_id}"
    assert metric.versions.count() == 3
    assert MetricVersion.objects.get(pk=created.pk).change == created.change  # earlier rows untouched
    assert props_of(metric) == {"engUnit": "K", "engHigh": 100.0, "fresh": 2}


def test_absent_metric_is_retired_and_restored_when_back():
    """TC-14: a metric missing from a newer birth is retired (not deleted) and restored when back."""
    t = topic()
    first = receive(t, birth(prod("P/stays"), prod("P/leaves")))
    leaving = Metric.objects.get(device_id=first.device_id, name="P/leaves")
    second = receive(t, birth(prod("P/stays")))
    assert second.counts["retired"] == 1
    leaving.refresh_from_db()
    assert leaving.retired_at is not None
    assert leaving.versions.first().kind == "retired"
    third = receive(t, birth(prod("P/stays"), prod("P/leaves")))
    assert third.counts["restored"] == 1 and third.counts["new"] == 0
    leaving.refresh_from_db()
    assert leaving.retired_at is None and leaving.versions.first().kind == "restored"
    assert Metric.objects.filter(device_id=first.device_id).count() == 2


def test_path_collision_rejects_the_second_name_and_applies_the_rest():
    """TC-02: two names normalizing to one path: the second is rejected with a reason, the rest applied."""
    t = topic()
    outcome = receive(t, birth(prod("P/a.b"), prod("P/a b"), prod("P/fine")))
    assert outcome.status == "applied" and outcome.counts["rejected"] == 1
    assert "'P/a b'" in outcome.reason and "already used by 'P/a.b'" in outcome.reason
    assert set(Metric.objects.filter(device_id=outcome.device_id).values_list("name", flat=True)) == {"P/a.b", "P/fine"}


def test_undecodable_frame_is_rejected_and_writes_nothing():
    """A malformed payload is rejected with its reason; the catalog is untouched."""
    t = topic()
    before = writes()
    outcome = receive(t, birth(prod("P/x"))[:-7])
    assert outcome.status == "rejected" and "truncated" in outcome.reason
    assert BirthFrame.objects.get(pk=outcome.frame_id).status == "rejected"
    assert writes() == before


def test_non_dbirth_topic_is_rejected():
    """docs/catalog.md: anything but a DBIRTH topic is rejected into the ledger with a reason."""
    outcome = receive("spBv1.0/G/NBIRTH/Edge", birth(prod("P/x")))
    assert outcome.status == "rejected" and "not a DBIRTH" in outcome.reason


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_frame_apply_once():
    """TC-11: the same frame processed by two workers at once is applied exactly once."""
    t = topic()
    frame_id = store_frame(t, birth(*(prod(f"P/m{i}", alias=i) for i in range(300))))
    results: list[str] = []

    def work() -> None:
        try:
            results.append(process_frame(frame_id).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["applied"] * 3  # one applied it, the others found it applied
    assert Metric.objects.filter(device__group_id=t.split("/")[1]).count() == 300
    assert MetricVersion.objects.filter(metric__device__group_id=t.split("/")[1]).count() == 300
