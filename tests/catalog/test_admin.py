"""Admin smoke: stewards browse and correct; anonymous users are refused."""

from __future__ import annotations

import pytest
from django.urls import reverse

from builders import device, metric
from catalog.models import MetricProperty, PropertyOverride
from ingest.ledger import store_frame

pytestmark = pytest.mark.django_db



@pytest.fixture
def catalog_rows():
    dev = device("Secil", "Portugal", "Cement")
    m = metric(dev, "Maceira/400 - Clinker Production/Active")
    MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=12, type="string", string_value="°C")
    frame = store_frame("spBv1.0/Secil/DBIRTH/Portugal/Cement", b"\x08\x01")
    return dev, m, frame


PAGES = [
    ("admin:catalog_device_changelist", None),
    ("admin:catalog_metric_changelist", None),
    ("admin:catalog_metricversion_changelist", None),
    ("admin:catalog_metricpathlineage_changelist", None),
    ("admin:ingest_birthframe_changelist", None),
    ("admin:catalog_device_change", "device"),
    ("admin:catalog_metric_change", "metric"),
    ("admin:ingest_birthframe_change", "frame"),
]


@pytest.mark.parametrize(("name", "obj"), PAGES)
def test_steward_sees_list_and_change_pages(client, steward, catalog_rows, name, obj):
    """SEC-03 / admin smoke: every catalog page renders for a steward."""
    dev, m, frame = catalog_rows
    args = {"device": [dev.pk], "metric": [m.pk], "frame": [frame], None: []}[obj]
    response = client.get(reverse(name, args=args))
    assert response.status_code == 200


@pytest.mark.parametrize(("name", "obj"), PAGES)
def test_anonymous_is_sent_to_login(client, catalog_rows, name, obj):
    """SEC-03: the admin requires login."""
    dev, m, frame = catalog_rows
    args = {"device": [dev.pk], "metric": [m.pk], "frame": [frame], None: []}[obj]
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_metric_search_by_path_and_canary_id(client, steward, catalog_rows):
    """Stewards find metrics by name, UNS path or canary id."""
    _, m, _ = catalog_rows
    url = reverse("admin:catalog_metric_changelist")
    for term in ("Clinker Production/Active", m.uns_path, m.uns_path.replace("/", ".")):
        assert m.uns_path in client.get(url, {"q": term}).content.decode()


def test_steward_cannot_change_identity_but_can_override(client, steward, catalog_rows):
    """SEC-03: stewards change properties (overrides), never identities."""
    _, m, _ = catalog_rows
    url = reverse("admin:catalog_metric_change", args=[m.pk])
    page = client.get(url).content.decode()
    assert 'name="name"' not in page and 'name="uns_path"' not in page  # read-only
    form = {
        "overrides-TOTAL_FORMS": "1", "overrides-INITIAL_FORMS": "0",
        "overrides-0-key": "engUnit", "overrides-0-value": "degC",
        "overrides-0-note": "unit fixed by steward",
    }
    for prefix in ("properties", "versions", "lineage"):
        form.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    form.update({"name": "forged", "uns_path": "forged/path"})
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    m.refresh_from_db()
    assert m.name == "Maceira/400 - Clinker Production/Active"
    override = PropertyOverride.objects.get(metric=m, key="engUnit")
    assert (override.value, override.updated_by) == ("degC", "ana")


def test_steward_cannot_delete_metrics_or_edit_ledger(client, steward, catalog_rows):
    """SEC-03: stewards may not delete catalog rows nor touch the ledger."""
    dev, m, frame = catalog_rows
    assert client.get(reverse("admin:catalog_metric_delete", args=[m.pk])).status_code == 403
    assert client.get(reverse("admin:catalog_device_delete", args=[dev.pk])).status_code == 403
    assert client.post(reverse("admin:ingest_birthframe_change", args=[frame]), {}).status_code == 403
