"""Bulk correction (docs/steward-bulk.md): typed values, the set-based apply, its audit, the admin
journey and Canary receiving the change (TC-44)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.urls import reverse

from builders import device, metric
from canary import push, sync
from canary.client import CanaryClient
from catalog import bulk, validation
from catalog.models import BulkChange, Metric, MetricProperty, MetricVersion, PropertyOverride


def pending_ids() -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT metric_id FROM uns_meta.sync_pending")
        return {row[0] for row in cur.fetchall()}


@pytest.mark.unit
@pytest.mark.parametrize(("kind", "text", "value"), [
    ("int", " 42 ", 42), ("long", "18446744073709551615", Decimal(2**64 - 1)), ("double", "250.5", 250.5),
    ("float", "-1e3", -1000.0), ("boolean", "Yes", True), ("boolean", "0", False), ("string", " °C ", " °C "),
    ("json", '{"a": [1, 2]}', {"a": [1, 2]}),
])
def test_parse_value_accepts_what_its_type_holds(kind, text, value):
    """TC-44: a typed value becomes the value of its column."""
    assert bulk.parse_value(kind, text) == bulk.TypedOverride(kind, value)


@pytest.mark.unit
@pytest.mark.parametrize(("kind", "text"), [
    ("int", "2147483648"), ("int", "1.5"), ("long", "18446744073709551616"), ("long", "-9223372036854775809"),
    ("double", "nan"), ("double", "inf"), ("double", "abc"), ("float", "1e39"), ("boolean", "maybe"),
    ("datetime", "yesterday"), ("json", "{bad"), ("json", '{"a": NaN}'), ("json", "Infinity"),
    ("string", "x" * (validation.MAX_STRING_BYTES + 1)), ("string", "a\x00b"), ("decimal", "1"),
])
def test_parse_value_refuses_what_cannot_be_stored(kind, text):
    """TC-44: every bad type/value combination is a BadValue with a message, never a database error."""
    with pytest.raises(bulk.BadValue):
        bulk.parse_value(kind, text)


@pytest.mark.unit
def test_keys_must_be_short_and_not_blank():
    """TC-44: a blank, space-padded or overlong key is refused."""
    for key in ("", "   ", " engUnit", "k" * (validation.MAX_KEY_BYTES + 1)):
        with pytest.raises(bulk.BadValue):
            bulk.check_key(key)


@pytest.fixture
def plants():
    """Plant A: three metrics (one already overridden to "bar"); plant B: one metric."""
    a, b = device(name="A"), device(name="B")
    ms = [metric(a, f"Area/T{i}") for i in range(3)] + [metric(b, "Area/T9")]
    Metric.objects.filter(device=a).update(plant="A")
    Metric.objects.filter(device=b).update(plant="B")
    for m in ms:
        MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=12, type="string", string_value="°C")
    PropertyOverride.objects.create(metric=ms[0], key="engUnit", type="string", string_value="bar", updated_by="x")
    return ms


@pytest.mark.django_db
def test_bulk_set_changes_only_the_selection_with_one_audit_row_and_versions(plants):
    """TC-44: set-based: every selected metric gets the override, a version naming the bulk change, and is
    pending for Canary; an override already at that value is left alone; the rest is untouched."""
    m0, m1, m2, other = plants
    change = bulk.apply_bulk(Metric.objects.filter(plant="A"), "engUnit", bulk.parse_value("string", "bar"),
                             user="ana", why="unit sheet 2026-12", selection="plant=A")
    assert (change.action, change.key, change.metrics, change.changed_by) == ("set", "engUnit", 2, "steward:ana")
    assert change.why == "unit sheet 2026-12" and change.value == {"type": "string", "value": "bar"}
    assert {o.metric_id: o.value for o in PropertyOverride.objects.all()} == {m0.pk: "bar", m1.pk: "bar",
                                                                               m2.pk: "bar"}
    versions = MetricVersion.objects.filter(kind="steward")
    assert {v.metric_id for v in versions} == {m1.pk, m2.pk}
    assert all(v.change == {"override_added": {"engUnit": "bar"}, "bulk": change.pk} and v.changed_by == "steward:ana"
               for v in versions)
    assert pending_ids() == {m1.pk, m2.pk}
    assert not other.overrides.exists()


@pytest.mark.django_db
def test_bulk_set_records_the_old_value_and_clear_removes(plants):
    """TC-44: changing an override records old -> new; clearing records what was removed."""
    m0 = plants[0]
    selection = Metric.objects.filter(pk=m0.pk)
    bulk.apply_bulk(selection, "engUnit", bulk.parse_value("double", "250.5"), user="ana", why="typed")
    assert PropertyOverride.objects.get(metric=m0).value == 250.5
    assert MetricVersion.objects.filter(metric=m0).first().change["override_changed"] == {"engUnit": ["bar", 250.5]}
    cleared = bulk.apply_bulk(Metric.objects.filter(plant="A"), "engUnit", None, user="ana", why="back to edge")
    assert cleared.metrics == 1 and not PropertyOverride.objects.exists()
    assert MetricVersion.objects.filter(metric=m0).first().change == {"override_removed": {"engUnit": 250.5},
                                                                      "bulk": cleared.pk}
    assert BulkChange.objects.count() == 2


@pytest.mark.django_db
def test_bulk_apply_is_all_or_nothing(plants, monkeypatch):
    """TC-44: a failure after the overrides were written leaves neither overrides, versions nor the audit row."""
    def fail(**kwargs):
        raise RuntimeError("signal receiver failed")

    monkeypatch.setattr(bulk.metrics_need_sync, "send", fail)
    with pytest.raises(RuntimeError):
        bulk.apply_bulk(Metric.objects.filter(plant="A"), "engUnit", bulk.parse_value("string", "K"), user="ana",
                        why="x")
    assert not BulkChange.objects.exists()
    assert list(PropertyOverride.objects.values_list("string_value", flat=True)) == ["bar"]
    assert not MetricVersion.objects.exists()



@pytest.mark.django_db
def test_admin_bulk_journey_preview_then_confirm_on_the_whole_filter(client, steward, plants):
    """TC-44: from a filtered list, "select all" -> form -> confirmation with count and sample -> applied to
    every metric of the filter; bad values are form errors, never a 500."""
    changelist = reverse("admin:catalog_metric_changelist")
    response = client.post(f"{changelist}?plant=A", {"action": "bulk_override", "select_across": "1",
                                                      "_selected_action": [plants[1].pk], "index": 0})
    assert response.status_code == 302
    url = response["Location"]
    assert "plant=A" in url and "id__in" not in url
    page = client.get(url)
    assert page.status_code == 200 and page.context["count"] == 3
    form = {"action": "set", "key": "engUnit", "type": "double", "value": "NaN", "why": "typo"}
    bad = client.post(url, form)
    assert bad.status_code == 200 and "value" in bad.context["form"].errors
    for wrong in ({"type": "int", "value": "99999999999"}, {"type": "json", "value": "{"}, {"key": "k" * 300},
                  {"type": "", "value": "1"}, {"why": ""}):
        assert client.post(url, {**form, **wrong}).context["form"].errors
    preview = client.post(url, {**form, "value": "250.5"})
    assert preview.status_code == 200 and preview.context["confirm"]
    assert not PropertyOverride.objects.filter(double_value=250.5).exists()
    done = client.post(url, {**form, "value": "250.5", "_confirm": "1"})
    assert done.status_code == 302
    assert sorted(PropertyOverride.objects.values_list("metric_id", "double_value")) == [
        (m.pk, 250.5) for m in plants[:3]]
    assert BulkChange.objects.get().selection == "plant=A"
    audit = client.get(reverse("admin:catalog_bulkchange_changelist"))
    assert audit.status_code == 200 and b"typo" in audit.content


@pytest.mark.django_db
def test_bulk_page_refuses_users_who_may_not_edit_overrides(client, plants):
    """TC-44: viewing the catalog is not enough to change it in bulk."""
    viewer = User.objects.create_user("viewer", password="not-a-real-password-1", is_staff=True)
    viewer.user_permissions.add(*Group.objects.get(name="Data steward").permissions.filter(codename__startswith="view"))
    client.force_login(viewer)
    assert client.get(reverse("admin:catalog_metric_bulk")).status_code == 403
    assert client.get(reverse("admin:catalog_metric_import")).status_code == 403


@pytest.mark.django_db
def test_admin_bulk_on_ticked_rows_only(client, steward, plants):
    """TC-44: without "select all", only the ticked metrics of the page are changed."""
    changelist = reverse("admin:catalog_metric_changelist")
    response = client.post(changelist, {"action": "bulk_override", "_selected_action": [plants[3].pk], "index": 0})
    url = response["Location"]
    assert client.get(url).context["count"] == 1
    client.post(url, {"action": "set", "key": "engUnit", "type": "string", "value": "K", "why": "x", "_confirm": "1"})
    assert PropertyOverride.objects.get(metric=plants[3]).value == "K"
    assert PropertyOverride.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_bulk_change_reaches_canary_batched(canary, plants):
    """TC-44: the bulk change goes through the normal flush and push: one batch, and the mock holds it."""
    bulk.apply_bulk(Metric.objects.filter(plant="A"), "engUnit", bulk.parse_value("string", "K"), user="ana",
                    why="x")
    batches: list[int] = []
    client = CanaryClient()
    deadline = time.monotonic() + 15
    while pending_ids():
        sync.flush_due(batches.extend)
        while batches:
            push.push_batches([batches.pop(0)], batches.extend, client)
        assert time.monotonic() < deadline, "still pending"
    for m in plants[:3]:
        assert canary.properties(m.canary_id)["engUnit"] == "K"
    assert "engUnit" not in canary.properties(plants[3].canary_id)
