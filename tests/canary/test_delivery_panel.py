"""The delivery panel of the metric page (canary.delivery): what Canary holds, the state, push now, resync."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from builders import device, metric
from canary import delivery
from canary.models import InFlight, PropertyMapping, PushBatch, Quarantine, SyncState
from catalog.models import MetricProperty, PropertyOverride
from cdcsync.models import PendingSync
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.django_db



@pytest.fixture
def kiln():
    dev = device("Secil", "Portugal", "Kiln")
    m = metric(dev, "Maceira/Kiln/Temperature", datatype=T.Double)
    MetricProperty.objects.create(metric=m, key="engUnit", sparkplug_type=T.String, type="string", string_value="°C")
    MetricProperty.objects.create(metric=m, key="Hi", sparkplug_type=T.Double, type="double", double_value=1450.0)
    MetricProperty.objects.create(metric=m, key="Quality", sparkplug_type=T.Int32, type="int", int_value=192)
    PropertyOverride.objects.create(metric=m, key="Hi", type="double", double_value=250.5, updated_by="ana")
    PropertyMapping.objects.get_or_create(key="Quality", defaults={"include": False})
    return m


def acked(m, **properties):
    SyncState.objects.update_or_create(metric_id=m.pk, defaults={"canary_id": m.canary_id, "properties": properties,
                                                                 "acked_at": timezone.now(), "batch_id": 1})


def page(client, m) -> str:
    response = client.get(reverse("admin:catalog_metric_change", args=[m.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_states_in_sync_out_of_sync_pending_in_flight_quarantined(kiln):
    """TC-44: the metric's state, first that applies: quarantined (with Canary's reason), in flight,
    pending (due time), in sync or out of sync; per key edge, override, effective and acknowledged value."""
    d = delivery.metric_delivery(kiln)
    assert d.state == delivery.OUT_OF_SYNC and d.acked_at is None
    rows = {r.key: r for r in d.keys}
    assert (rows["Hi"].edge, rows["Hi"].override, rows["Hi"].effective) == (1450.0, 250.5, 250.5)
    assert rows["Quality"].state == delivery.NOT_SENT and rows["Hi"].acked is delivery.MISSING

    acked(kiln, engUnit="°C", Hi=250.5)
    d = delivery.metric_delivery(kiln)
    assert d.state == delivery.IN_SYNC and d.acked_at is not None
    assert {r.key: r.state for r in d.keys} == {"engUnit": "in sync", "Hi": "in sync", "Quality": delivery.NOT_SENT}

    acked(kiln, engUnit="°C", Hi=1450.0, Old="x")  # Canary still holds the edge value and a removed key
    PendingSync.objects.create(metric_id=kiln.pk, first_change_at=timezone.now(), last_change_at=timezone.now(),
                               due_at=timezone.now() + timedelta(seconds=5))
    d = delivery.metric_delivery(kiln)
    assert d.state == delivery.PENDING and d.due_at is not None
    states = {r.key: r.state for r in d.keys}
    assert states["Hi"] == delivery.PENDING and states["Old"] == delivery.PENDING and states["engUnit"] == "in sync"

    batch = PushBatch.objects.create(tags=1, size=10, body="{}", targets={})
    InFlight.objects.create(metric_id=kiln.pk, batch=batch)
    d = delivery.metric_delivery(kiln)
    assert (d.state, d.batch_id) == (delivery.IN_FLIGHT, batch.pk)

    Quarantine.objects.create(metric_id=kiln.pk, canary_id=kiln.canary_id, reason="Hi: value out of range", batch_id=9)
    d = delivery.metric_delivery(kiln)
    assert (d.state, d.reason) == (delivery.QUARANTINED, "Hi: value out of range")


def test_unconfirmed_key_is_shown_as_such(kiln):
    """TC-44: a key a failed batch sent (Canary may hold it) is shown as unconfirmed with the batch."""
    acked(kiln, engUnit="°C", Hi={"unconfirmed": 42})
    d = delivery.metric_delivery(kiln)
    assert {r.key: r.state for r in d.keys}["Hi"] == "unconfirmed (batch 42)"
    assert d.state == delivery.OUT_OF_SYNC


def test_panel_on_the_metric_page(client, steward, kiln):
    """TC-44: the metric page shows the panel (state, tag, last acknowledgement, Canary's reason) and its buttons."""
    acked(kiln, engUnit="°C", Hi=1450.0)
    Quarantine.objects.create(metric_id=kiln.pk, canary_id=kiln.canary_id, reason="refused: bad engUnit", batch_id=9)
    text = page(client, kiln)
    assert "Delivery to Canary" in text and "refused: bad engUnit" in text and "quarantined since" in text
    assert "Push now" in text and "Resync this device" in text and 'id="delivery-actions"' in text
    assert kiln.canary_id in text and "1450.0" in text and "250.5" in text


def test_push_now_and_resync_device(client, steward, kiln):
    """TC-44: "Push now" makes the metric pending, due now; "Resync this device" forgets what Canary
    acknowledged for every metric of the device and makes them all pending; GET is refused, not a 500."""
    other = metric(kiln.device, "Maceira/Kiln/Pressure")
    acked(kiln, engUnit="°C", Hi=250.5)
    acked(other)
    push = reverse("admin:catalog_metric_push", args=[kiln.pk])
    assert client.get(push).status_code == 405
    response = client.post(push)
    assert response.status_code == 302
    row = PendingSync.objects.get(metric_id=kiln.pk)
    assert row.due_at <= timezone.now() and row.reason == "steward push"
    assert client.post(reverse("admin:catalog_metric_resync_device", args=[kiln.pk])).status_code == 302
    assert not SyncState.objects.filter(metric_id__in=[kiln.pk, other.pk]).exists()
    assert set(PendingSync.objects.values_list("metric_id", flat=True)) == {kiln.pk, other.pk}
    assert client.post(reverse("admin:catalog_metric_push", args=[10**9])).status_code == 404


def test_viewer_without_change_permission_cannot_push(client, kiln):
    """TC-44: a staff user without the steward's change permission cannot push or resync."""
    user = User.objects.create_user("viewer", password="not-a-real-password-1", is_staff=True)
    client.force_login(user)
    assert client.post(reverse("admin:catalog_metric_push", args=[kiln.pk])).status_code == 403
    assert not PendingSync.objects.exists()
