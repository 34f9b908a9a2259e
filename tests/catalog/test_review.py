"""Needs review (catalog.review): overrides whose edge value changed after they were set."""

from __future__ import annotations

import pytest
from django.urls import reverse

from builders import device, metric
from catalog import review
from catalog.models import MetricProperty, MetricVersion, PropertyOverride
from cdcsync.models import PendingSync
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:catalog_propertyoverride_changelist"



@pytest.fixture
def overridden():
    """Two metrics whose engUnit the steward overrode to 'bar' while the edge said '°C'."""
    dev = device("Secil", "Portugal", "Kiln")
    out = []
    for name in ("Maceira/Kiln/P1", "Maceira/Kiln/P2"):
        m = metric(dev, name)
        MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=T.String, type="string",
                                      string_value="°C")
        PropertyOverride.objects.create(metric=m, key="engUnit", type="string", string_value="bar", updated_by="ana")
        out.append(m)
    return out


def edge_changes(m, value):
    """A later birth changed the edge value."""
    MetricProperty.objects.filter(metric=m, key="engUnit").update(string_value=value)


def test_override_needs_review_only_after_the_edge_value_changes(overridden):
    """TC-44: an override is flagged when the edge's value, type or presence changes after it was set; not before."""
    m1, m2 = overridden
    assert PropertyOverride.objects.get(metric=m1).edge_seen == {"type": "string", "value": "°C"}
    assert not review.needs_review().exists()
    edge_changes(m1, "mbar")
    assert list(review.needs_review().values_list("metric_id", flat=True)) == [m1.pk]
    MetricProperty.objects.filter(metric=m2).delete()  # the edge no longer sends it
    assert set(review.needs_review().values_list("metric_id", flat=True)) == {m1.pk, m2.pk}


def test_keep_override_restamps_and_is_audited(overridden):
    """TC-44: "keep override" re-stamps the override against the new edge value, with a version by the steward."""
    m1, _ = overridden
    edge_changes(m1, "mbar")
    assert review.keep(PropertyOverride.objects.all(), "ana") == 1
    assert not review.needs_review().exists()
    assert PropertyOverride.objects.get(metric=m1).value == "bar"
    version = MetricVersion.objects.get(metric=m1)
    assert version.changed_by == "steward:ana"
    assert version.change == {"override_kept": {"engUnit": {"edge": ["°C", "mbar"], "override": "bar"}}}


def test_accept_edge_value_removes_the_override_audited_and_synced(overridden):
    """TC-44: "accept edge value" removes the override (versioned) and marks the metric for Canary;
    overrides not needing review are left alone."""
    m1, m2 = overridden
    edge_changes(m1, "mbar")
    assert review.accept_edge(PropertyOverride.objects.all(), "ana") == 1
    assert list(PropertyOverride.objects.values_list("metric_id", flat=True)) == [m2.pk]
    version = MetricVersion.objects.get(metric=m1)
    assert version.change == {"override_removed": {"engUnit": "bar"}} and version.changed_by == "steward:ana"
    assert PendingSync.objects.filter(metric_id=m1.pk).exists()


def test_needs_review_list_and_actions_in_the_admin(client, steward, overridden):
    """TC-44: the "Needs review" list shows the edge value when set and now; its actions work for a steward."""
    m1, m2 = overridden
    edge_changes(m1, "mbar")
    page = client.get(reverse(CHANGELIST), {"review": "needed"})
    assert page.status_code == 200
    text = page.content.decode()
    assert m1.uns_path in text and m2.uns_path not in text and "mbar" in text and "°C" in text
    ids = [str(o.pk) for o in PropertyOverride.objects.all()]
    response = client.post(reverse(CHANGELIST) + "?review=needed",
                           {"action": "keep_override", "_selected_action": ids})
    assert response.status_code == 302
    assert not review.needs_review().exists()
    assert client.get(reverse("admin:catalog_propertyoverride_change", args=[ids[0]])).status_code == 200
